#!/usr/bin/env bash
# The one-host HPC site: munge, Slurm (slurmctld, slurmd, slurmdbd on MariaDB, slurmrestd),
# a login-node sshd and an MLflow tracking server, all on loopback.
#
#   compose/local/stack.sh up|down|status
#
# State and logs live under AXLE_STACK_DIR (default /var/lib/axle). See README.md here.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
source "$HERE/lib.sh"

PACKAGES=(
  munge slurmctld slurmd slurmdbd slurmrestd slurm-client
  slurm-wlm-jwt-plugin slurm-wlm-mysql-plugin
  mariadb-server mariadb-client openssh-server openssh-client
  python3.11-venv curl iproute2 util-linux passwd sudo systemd
)

# ---------------------------------------------------------------- install and layout

do_packages() {
  pkg_ensure "${PACKAGES[@]}"
  command -v python3.11 >/dev/null
}

do_layout() {
  install -d -m 0755 -o root -g root "$AXLE_STACK_DIR" "$LOGS_DIR" "$RUN_DIR" \
    "$SLURM_DIR" "$SLURM_DIR/etc" "$SSH_DIR" "$AXLE_STACK_DIR/cluster"
  install -d -m 0700 -o root -g root "$KEYS_DIR"
  install -d -m 0700 -o slurm -g slurm "$SLURM_DIR/state"
  install -d -m 0755 -o root -g root "$SLURM_DIR/spool" "$SLURM_DIR/spool/slurmd"
  # 0711: munged needs every directory above its socket searchable by all.
  install -d -m 0711 -o munge -g munge "$MUNGE_DIR"
  # Scratch is shared like a cluster file system: every user owns a folder of their own.
  install -d -m 0755 -o root -g root "$SCRATCH_ROOT"
  # Daemons that drop privileges write their own log and pid file.
  local f
  for f in munged slurmctld slurmdbd; do
    touch "$LOGS_DIR/$f.log"
  done
  chown munge:munge "$LOGS_DIR/munged.log"
  chown slurm:slurm "$LOGS_DIR/slurmctld.log" "$LOGS_DIR/slurmdbd.log"
  chmod 0640 "$LOGS_DIR/munged.log"
}

# ---------------------------------------------------------------- munge

munge_alive() { alive "$RUN_DIR/munged.pid" && [[ -S "$MUNGE_SOCKET" ]]; }

do_munge() {
  if ! munge_alive && munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; then
    # Another site on this host runs munged: share it (one munged per host, one socket).
    echo "using the munged already serving $MUNGE_SOCKET"
    return 0
  fi
  local key="$MUNGE_DIR/munge.key"
  if [[ ! -s "$key" ]]; then
    echo "generating $key"
    dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
  fi
  chown munge:munge "$key"
  chmod 0400 "$key"
  if munge_alive; then
    echo "munged already running (pid $(pid_from "$RUN_DIR/munged.pid"))"
  else
    install -d -m 0755 -o munge -g munge "$(dirname "$MUNGE_SOCKET")"
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    touch "$RUN_DIR/munged.pid"
    chown munge:munge "$RUN_DIR/munged.pid"
    setpriv --reuid=munge --regid=munge --init-groups -- /usr/sbin/munged \
      --key-file="$key" --socket="$MUNGE_SOCKET" --pid-file="$RUN_DIR/munged.pid" \
      --log-file="$LOGS_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed"
    wait_up 10 "$RUN_DIR/munged.pid" munge_alive
  fi
  munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET" >/dev/null
}

# ---------------------------------------------------------------- MariaDB for slurmdbd

mariadb_up() { mariadb-admin --protocol=socket ping >/dev/null 2>&1; }

do_mariadb() {
  if mariadb_up; then
    echo "MariaDB already running"
  else
    echo "starting mariadbd"
    install -d -m 0755 -o mysql -g mysql /run/mysqld
    if [[ ! -d /var/lib/mysql/mysql ]]; then
      mariadb-install-db --user=mysql --datadir=/var/lib/mysql
    fi
    spawn "$RUN_DIR/mariadbd.pid" "$LOGS_DIR/mariadbd.log" root /usr/sbin/mariadbd --user=mysql
    # Only a MariaDB this script started is stopped by `down`.
    touch "$RUN_DIR/mariadbd.started-by-axle"
    wait_for 60 mariadb_up
  fi
  local pass_file="$SLURM_DIR/dbd.pass" pass
  if [[ ! -s "$pass_file" ]]; then
    (umask 077 && head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$pass_file")
  fi
  chmod 0600 "$pass_file"
  pass="$(<"$pass_file")"
  local db="$AXLE_SLURMDBD_DB" dbuser="$AXLE_SLURMDBD_DB_USER"
  [[ "$db" =~ ^[a-z_][a-z0-9_]*$ && "$dbuser" =~ ^[a-z_][a-z0-9_]*$ ]] || {
    echo "AXLE_SLURMDBD_DB and AXLE_SLURMDBD_DB_USER must be plain names" >&2
    return 1
  }
  mariadb --protocol=socket -u root <<SQL
CREATE DATABASE IF NOT EXISTS \`${db}\`;
CREATE USER IF NOT EXISTS '${dbuser}'@'localhost' IDENTIFIED BY '${pass}';
CREATE USER IF NOT EXISTS '${dbuser}'@'127.0.0.1' IDENTIFIED BY '${pass}';
ALTER USER '${dbuser}'@'localhost' IDENTIFIED BY '${pass}';
ALTER USER '${dbuser}'@'127.0.0.1' IDENTIFIED BY '${pass}';
GRANT ALL PRIVILEGES ON \`${db}\`.* TO '${dbuser}'@'localhost';
GRANT ALL PRIVILEGES ON \`${db}\`.* TO '${dbuser}'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL
}

# ---------------------------------------------------------------- Unix users and keys

# cluster_users: the demo users this stack may manage (skips accounts it did not create).
cluster_users() {
  local u gecos
  for u in $AXLE_CLUSTER_USERS; do
    if id -u "$u" >/dev/null 2>&1; then
      gecos="$(getent passwd "$u" | cut -d: -f5)"
      [[ "$gecos" == "$AXLE_USER_GECOS" ]] || continue
    fi
    printf '%s\n' "$u"
  done
}

first_cluster_user() {
  local u
  for u in $(cluster_users); do
    printf '%s\n' "$u"
    return 0
  done
  return 1
}

do_users() {
  local u gecos home group_opts keydir
  for u in $AXLE_CLUSTER_USERS; do
    if ! [[ "$u" =~ ^[a-z_][a-z0-9_-]{0,31}$ ]]; then
      echo "not a valid user name: $u" >&2
      return 1
    fi
    if id -u "$u" >/dev/null 2>&1; then
      gecos="$(getent passwd "$u" | cut -d: -f5)"
      if [[ "$gecos" != "$AXLE_USER_GECOS" ]]; then
        # Never adopt somebody else's account (e.g. a real `admin`): no keys, no Slurm user.
        echo "SKIP $u: a Unix account '$u' exists that this stack did not create" \
          "(GECOS '$gecos'); set AXLE_CLUSTER_USERS to use another name" >&2
        continue
      fi
    else
      # A group of the same name may exist without a user (Ubuntu has an `admin` group
      # that grants sudo): never join it, use the common `users` group instead.
      if getent group "$u" >/dev/null; then
        group_opts=(--no-user-group --gid users)
      else
        group_opts=(--user-group)
      fi
      useradd --create-home --shell /bin/bash --comment "$AXLE_USER_GECOS" "${group_opts[@]}" "$u"
    fi
    # '*' rather than the locked '!': no password works, yet sshd lets key logins in.
    usermod -p '*' "$u"
    home="$(getent passwd "$u" | cut -d: -f6)"
    install -d -m 0700 -o "$u" -g "$(id -g "$u")" "$home/.ssh"
    install -d -m 0700 -o "$u" -g "$(id -g "$u")" "$SCRATCH_ROOT/$u"
    keydir="$KEYS_DIR/$u"
    install -d -m 0700 -o root -g root "$keydir"
    if [[ ! -s "$keydir/id_ed25519" ]]; then
      rm -f "$keydir/id_ed25519" "$keydir/id_ed25519.pub"
      ssh-keygen -q -t ed25519 -N '' -C "axle-hub-$u@local" -f "$keydir/id_ed25519"
    fi
    chmod 0600 "$keydir/id_ed25519"
    # The hub's key is the only one the stack manages; other lines are left alone.
    local ak="$home/.ssh/authorized_keys" pub
    pub="$(<"$keydir/id_ed25519.pub")"
    touch "$ak"
    grep -qxF "$pub" "$ak" || printf '%s\n' "$pub" >>"$ak"
    chown "$u:$(id -g "$u")" "$ak"
    chmod 0600 "$ak"
    echo "user $u ok (home $home, scratch $SCRATCH_ROOT/$u)"
  done
  [[ -n "$(cluster_users)" ]]
}

# ---------------------------------------------------------------- Slurm configuration

# Upper-case locals are read by name in render().
# shellcheck disable=SC2034
do_slurm_config() {
  local jwt="$SLURM_DIR/jwt_hs256.key"
  if [[ ! -s "$jwt" ]]; then
    echo "generating $jwt"
    dd if=/dev/urandom of="$jwt" bs=32 count=1 status=none
  fi
  chown slurm:slurm "$jwt"
  chmod 0600 "$jwt"

  # One node sized from this machine; RealMemory stays below the real value so the
  # node is not drained when the kernel's view moves by a few MiB.
  local hw node_hw mem
  hw="$(env -u SLURM_CONF slurmd -C | head -n 1)"
  node_hw="$(grep -oE '(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=[0-9]+' <<<"$hw" | tr '\n' ' ')"
  mem="$(grep -oE 'RealMemory=[0-9]+' <<<"$hw" | cut -d= -f2)"
  [[ -n "$node_hw" && -n "$mem" ]] || {
    echo "cannot read the hardware from 'slurmd -C': $hw" >&2
    return 1
  }
  local CLUSTER="$AXLE_SLURM_CLUSTER" NODE_NAME NODE_HW="${node_hw% }"
  local REAL_MEMORY=$((mem - (mem / 20 > 512 ? mem / 20 : 512)))
  local DEF_MEM_PER_CPU=1024 JWT_KEY="$jwt"
  local SLURMCTLD_PORT="$AXLE_SLURMCTLD_PORT" SLURMD_PORT="$AXLE_SLURMD_PORT"
  local SLURMDBD_PORT="$AXLE_SLURMDBD_PORT" DB_PASS DB_NAME="$AXLE_SLURMDBD_DB" DB_USER="$AXLE_SLURMDBD_DB_USER"
  NODE_NAME="$(hostname -s)"
  DB_PASS="$(<"$SLURM_DIR/dbd.pass")"
  # Job ids restart at 1 when slurmctld's state is new (a wiped stack folder) while the
  # accounting database still holds the old jobs; ids would then name two jobs in sacct.
  local FIRST_JOB_ID max_job
  max_job="$(mariadb --protocol=socket -u root -N -B \
    -e "SELECT COALESCE(MAX(id_job), 0) FROM \`${DB_NAME}\`.\`${CLUSTER}_job_table\`" 2>/dev/null || true)"
  [[ "$max_job" =~ ^[0-9]+$ ]] || max_job=0
  FIRST_JOB_ID=$((max_job + 1))
  ((REAL_MEMORY > DEF_MEM_PER_CPU)) || DEF_MEM_PER_CPU=$((REAL_MEMORY / 2))
  echo "node $NODE_NAME: $NODE_HW RealMemory=$REAL_MEMORY (machine: $mem MiB)"

  render "$HERE/slurm.conf.in" "$SLURM_DIR/etc/slurm.conf" 0644 root:root \
    CLUSTER NODE_NAME NODE_HW REAL_MEMORY DEF_MEM_PER_CPU JWT_KEY SLURMCTLD_PORT \
    SLURMD_PORT SLURMDBD_PORT SLURM_DIR FIRST_JOB_ID RUN_DIR LOGS_DIR
  render "$HERE/slurmdbd.conf.in" "$SLURM_DIR/etc/slurmdbd.conf" 0600 slurm:slurm \
    JWT_KEY SLURMDBD_PORT RUN_DIR LOGS_DIR DB_PASS DB_NAME DB_USER

  # Slurm clients default to /etc/slurm/slurm.conf: point it at this site, as on a real
  # login node, unless the machine already has a Slurm configuration of its own.
  local etc=/etc/slurm/slurm.conf
  if [[ "$AXLE_MAIN_SITE" != 1 ]]; then
    # The hub runs Slurm's commands over SSH with an emptied environment (no SLURM_CONF from
    # sshd's SetEnv), so this site's login node gets its own Slurm folder, as a login node
    # serving two clusters does: the same commands, bound to this site's configuration.
    local prog
    install -d -m 0755 "$SLURM_BIN_DIR"
    for prog in sbatch squeue sacct sinfo scancel scontrol sacctmgr srun; do
      printf '#!/bin/sh\nSLURM_CONF=%s exec /usr/bin/%s "$@"\n' "$SLURM_CONF" "$prog" >"$SLURM_BIN_DIR/$prog"
      chmod 0755 "$SLURM_BIN_DIR/$prog"
    done
    echo "a second site: $etc left to the main one; this site's commands are in $SLURM_BIN_DIR"
    return 0
  fi
  install -d -m 0755 /etc/slurm
  if [[ -L "$etc" || ! -e "$etc" ]]; then
    ln -sfn "$SLURM_CONF" "$etc"
  else
    echo "WARNING: $etc is a real file; left alone. Use SLURM_CONF=$SLURM_CONF" >&2
  fi
}

# ---------------------------------------------------------------- slurmdbd and accounting

slurmdbd_alive() { alive "$RUN_DIR/slurmdbd.pid" "$AXLE_SLURMDBD_PORT"; }

do_slurmdbd() {
  if slurmdbd_alive; then
    echo "slurmdbd already running"
  else
    stop_pidfile slurmdbd "$RUN_DIR/slurmdbd.pid"
    /usr/sbin/slurmdbd
    wait_up 60 "$RUN_DIR/slurmdbd.pid" slurmdbd_alive
  fi
  wait_for 30 sacctmgr_ready
}

sacctmgr_ready() { sacctmgr_q show cluster format=cluster >/dev/null 2>&1; }

# sacctmgr_q ARGS...: sacctmgr, parsable, never interactive, never hung for good
# (a sacctmgr that misparses its arguments falls into its prompt and spins on EOF).
sacctmgr_q() { timeout 60 sacctmgr -nP "$@" </dev/null; }

do_accounting() {
  local c="$AXLE_SLURM_CLUSTER" u
  [[ -n "$(sacctmgr_q show cluster where cluster="$c" format=cluster)" ]] ||
    timeout 60 sacctmgr -i add cluster "$c" </dev/null
  [[ -n "$(sacctmgr_q show account where name=vision format=account)" ]] ||
    timeout 60 sacctmgr -i add account vision cluster="$c" description="Computer vision" organization=axle </dev/null
  [[ -n "$(sacctmgr_q show account where name=research format=account)" ]] ||
    timeout 60 sacctmgr -i add account research cluster="$c" description="Research" organization=axle </dev/null
  for u in $(cluster_users); do
    if [[ -z "$(sacctmgr_q show assoc where cluster="$c" user="$u" account=vision format=user)" ]]; then
      timeout 60 sacctmgr -i add user "$u" account=vision defaultaccount=vision cluster="$c" </dev/null
    fi
  done
  sacctmgr_q show assoc where cluster="$c" format=cluster,account,user
}

# ---------------------------------------------------------------- Slurm operator for the hub

# The hub makes Slurm enforce its grants (apps/clusters/enforcement.py) through a cluster
# account with AdminLevel=Operator: here the demo's `admin`, whose grant an administrator
# designates as the cluster's operator grant. Idempotent.
do_slurm_operator() {
  local op="${AXLE_SLURM_OPERATOR:-admin}"
  grep -qxF "$op" <<<"$(cluster_users)" || { warn "no cluster user $op: no Slurm operator for the hub"; return 0; }
  if [[ "$(sacctmgr_q show user "$op" format=adminlevel)" != "Operator" ]]; then
    timeout 60 sacctmgr -i modify user "$op" set adminlevel=Operator </dev/null
  fi
}

# ---------------------------------------------------------------- slurmctld and slurmd

slurmctld_alive() { alive "$RUN_DIR/slurmctld.pid" "$AXLE_SLURMCTLD_PORT" && scontrol ping >/dev/null 2>&1; }
slurmd_alive() { alive "$RUN_DIR/slurmd.pid" "$AXLE_SLURMD_PORT"; }

do_slurmctld() {
  if slurmctld_alive; then
    echo "slurmctld already running; re-reading the configuration"
    scontrol reconfigure
  else
    stop_pidfile slurmctld "$RUN_DIR/slurmctld.pid"
    /usr/sbin/slurmctld
    wait_up 60 "$RUN_DIR/slurmctld.pid" slurmctld_alive
  fi
}

node_idle() {
  local node
  node="$(hostname -s)"
  sinfo -h -n "$node" -o '%T' | grep -qE '^(idle|mixed|allocated|completing)$'
}

do_slurmd() {
  if slurmd_alive; then
    echo "slurmd already running"
  else
    stop_pidfile slurmd "$RUN_DIR/slurmd.pid"
    /usr/sbin/slurmd
    wait_up 30 "$RUN_DIR/slurmd.pid" slurmd_alive
  fi
  local node state
  node="$(hostname -s)"
  state="$(sinfo -h -n "$node" -o '%T' | head -n 1)"
  if [[ "$state" == down* || "$state" == drain* ]]; then
    echo "node $node is $state; resuming it"
    scontrol update nodename="$node" state=resume || true
  fi
  wait_for 60 node_idle
  sinfo
}

# ---------------------------------------------------------------- slurmrestd

slurmrestd_alive() { alive "$RUN_DIR/slurmrestd.pid" "$AXLE_SLURMRESTD_PORT"; }

# slurmrestd_mode_is MODE: the running slurmrestd serves in MODE (inetd: under the supervisor).
slurmrestd_mode_is() {
  local pid cmd
  pid="$(pid_from "$RUN_DIR/slurmrestd.pid")" || return 1
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  if [[ "$1" == inetd ]]; then [[ "$cmd" == *systemd-socket-activate* ]]; else [[ "$cmd" != *systemd-socket-activate* ]]; fi
}

# stop_slurmrestd: the daemon or the supervisor, and (inetd mode) the per-connection processes
# it started: spawn() made it lead a process group of its own.
stop_slurmrestd() {
  local pid
  pid="$(pid_from "$RUN_DIR/slurmrestd.pid")" || pid=""
  stop_pidfile slurmrestd "$RUN_DIR/slurmrestd.pid"
  if [[ -n "$pid" ]] && kill -0 -- "-$pid" 2>/dev/null; then kill -TERM -- "-$pid" 2>/dev/null || true; fi
}

do_slurmrestd() {
  ensure_system_user "$AXLE_SLURMREST_USER" /nonexistent
  [[ "$AXLE_SLURMRESTD_MODE" == inetd || "$AXLE_SLURMRESTD_MODE" == listen ]] || {
    echo "AXLE_SLURMRESTD_MODE must be inetd or listen, not $AXLE_SLURMRESTD_MODE" >&2
    return 1
  }
  if slurmrestd_alive && slurmrestd_mode_is "$AXLE_SLURMRESTD_MODE"; then
    echo "slurmrestd already running ($AXLE_SLURMRESTD_MODE mode)"
  else
    stop_slurmrestd
    local restd=(/usr/sbin/slurmrestd -f "$SLURM_CONF" -a rest_auth/jwt
      -s "openapi/$AXLE_REST_API_VERSION,openapi/db$AXLE_REST_API_VERSION")
    # SLURM_JWT=daemon: slurmrestd forwards each client's token instead of using munge.
    # MALLOC_ARENA_MAX=1: slurmrestd's memory growth is glibc's, one malloc arena per worker
    # thread, each keeping the high-water mark of the biggest answer it built (~420 MiB for
    # 10,000 jobs), up to 8 per core; with one arena it stays at one answer's (bench/README.md).
    if [[ "$AXLE_SLURMRESTD_MODE" == inetd ]]; then
      # One slurmrestd per TCP connection, the connection as its stdin/stdout (slurmrestd's
      # inetd mode); it exits when the client closes, and the memory goes with it. Loopback
      # only, JWT only, as the daemon was. SYSTEMD_LOG_LEVEL: no log line per connection.
      SLURM_JWT=daemon MALLOC_ARENA_MAX=1 SYSTEMD_LOG_LEVEL=warning spawn "$RUN_DIR/slurmrestd.pid" \
        "$LOGS_DIR/slurmrestd.log" "$AXLE_SLURMREST_USER" /usr/bin/systemd-socket-activate \
        --listen="127.0.0.1:$AXLE_SLURMRESTD_PORT" --accept --inetd --setenv=SLURM_JWT \
        --setenv=MALLOC_ARENA_MAX "${restd[@]}"
    else
      SLURM_JWT=daemon MALLOC_ARENA_MAX=1 spawn "$RUN_DIR/slurmrestd.pid" "$LOGS_DIR/slurmrestd.log" \
        "$AXLE_SLURMREST_USER" "${restd[@]}" "127.0.0.1:$AXLE_SLURMRESTD_PORT"
    fi
    wait_up 30 "$RUN_DIR/slurmrestd.pid" slurmrestd_alive
  fi
  local user token
  user="$(first_cluster_user)"
  token="$(scontrol token username="$user" lifespan=300 | sed -n 's/^SLURM_JWT=//p')"
  curl_secret header "X-SLURM-USER-TOKEN: $token" -fsS -H "X-SLURM-USER-NAME: $user" \
    "http://127.0.0.1:$AXLE_SLURMRESTD_PORT/slurm/$AXLE_REST_API_VERSION/diag" >/dev/null
  echo "GET /slurm/$AXLE_REST_API_VERSION/diag as $user: ok"
}

# ---------------------------------------------------------------- login node sshd

sshd_alive() { alive "$RUN_DIR/sshd.pid" "$AXLE_SSH_PORT"; }

# shellcheck disable=SC2034 # SSH_PORT is read by name in render()
do_sshd() {
  local hostkey="$SSH_DIR/ssh_host_ed25519_key"
  if [[ ! -s "$hostkey" ]]; then
    rm -f "$hostkey" "$hostkey.pub"
    ssh-keygen -q -t ed25519 -N '' -C "axle-local-login" -f "$hostkey"
  fi
  chmod 0600 "$hostkey"
  local SSH_PORT="$AXLE_SSH_PORT" ALLOWED_USERS
  ALLOWED_USERS="$(cluster_users | tr '\n' ' ')"
  ALLOWED_USERS="${ALLOWED_USERS% }"
  render "$HERE/sshd_config.in" "$SSH_DIR/sshd_config" 0644 root:root \
    SSH_PORT SSH_DIR RUN_DIR ALLOWED_USERS SLURM_CONF
  install -d -m 0755 /run/sshd
  /usr/sbin/sshd -t -f "$SSH_DIR/sshd_config"

  # The hub trusts exactly this host key; nothing is learnt on first use.
  local kh="$SSH_DIR/known_hosts"
  printf '[127.0.0.1]:%s %s\n' "$AXLE_SSH_PORT" "$(cut -d' ' -f1-2 "$hostkey.pub")" >"$kh.tmp"
  chmod 0644 "$kh.tmp"
  mv -f "$kh.tmp" "$kh"
  ssh-keygen -l -E sha256 -f "$hostkey.pub" | awk '{print $2}' >"$SSH_DIR/host_fingerprint"

  if sshd_alive; then
    echo "sshd already running; reloading its configuration"
    kill -HUP "$(pid_from "$RUN_DIR/sshd.pid")"
    sleep 0.5
    wait_for 10 sshd_alive
  else
    stop_pidfile sshd "$RUN_DIR/sshd.pid"
    /usr/sbin/sshd -f "$SSH_DIR/sshd_config" -E "$LOGS_DIR/sshd.log"
    wait_up 10 "$RUN_DIR/sshd.pid" sshd_alive
  fi
  local user
  user="$(first_cluster_user)"
  ssh -p "$AXLE_SSH_PORT" -i "$KEYS_DIR/$user/id_ed25519" -o BatchMode=yes \
    -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$kh" -o IdentitiesOnly=yes \
    "$user@127.0.0.1" sinfo --version
}

# ---------------------------------------------------------------- MLflow

mlflow_alive() {
  alive "$RUN_DIR/mlflow.pid" "$AXLE_MLFLOW_PORT" &&
    curl -fsS -m 5 "http://127.0.0.1:$AXLE_MLFLOW_PORT/health" >/dev/null 2>&1
}

do_venv() {
  local req="$HERE/requirements-cluster.txt" stamp="$VENV_DIR/.axle-requirements.sha256" sum
  if [[ "$VENV_DIR" != "$AXLE_STACK_DIR"/* ]]; then
    # Another site's environment (AXLE_VENV_DIR): used as it is, never changed from here.
    "$VENV_DIR/bin/python" -c 'import mlflow, sklearn; print("mlflow", mlflow.__version__, "sklearn", sklearn.__version__)'
    return 0
  fi
  sum="$(sha256sum "$req" | cut -d' ' -f1)"
  if [[ ! -x "$VENV_DIR/bin/python" ]]; then
    # Debian's interpreter, not a per-user one (pyenv under /root): job users must run it.
    /usr/bin/python3.11 -m venv "$VENV_DIR"
  fi
  if [[ ! -f "$stamp" || "$(<"$stamp")" != "$sum" ]]; then
    "$VENV_DIR/bin/pip" install --disable-pip-version-check -q -r "$req"
    printf '%s' "$sum" >"$stamp"
  else
    echo "requirements unchanged; nothing to install"
  fi
  # Jobs of every cluster user run this interpreter.
  chmod -R a+rX "$VENV_DIR"
  "$VENV_DIR/bin/python" -c 'import mlflow, sklearn; print("mlflow", mlflow.__version__, "sklearn", sklearn.__version__)'
}

# MLflow runs its own login (the basic-auth app): anonymous requests get 401, and a user sees
# only the experiments and models granted to them (default_permission = NO_PERMISSIONS). The
# hub logs in as the admin MLFLOW_ADMIN_USER and makes a user per job; the admin's password
# is made once here, kept root-only, and copied for the hub by ./dev.
MLFLOW_ADMIN_USER="${AXLE_MLFLOW_ADMIN_USER:-axle-hub}"
SECRETS_DIR="$AXLE_STACK_DIR/secrets"
MLFLOW_PASSWORD_FILE="$SECRETS_DIR/mlflow-admin-password"
MLFLOW_FLASK_KEY_FILE="$SECRETS_DIR/mlflow-flask-secret-key"

# secret_ensure FILE: a random secret in FILE (root, 0600), made once and then kept.
secret_ensure() {
  [[ -s "$1" ]] && return 0
  (umask 077 && head -c 32 /dev/urandom | base64 | tr -d '/+=\n' >"$1.tmp" && mv -f "$1.tmp" "$1")
}

# mlflow_requires_login: the API refuses an anonymous request (a server started before the
# auth app was configured here does not, and is restarted).
mlflow_requires_login() {
  [[ "$(curl -s -o /dev/null -w '%{http_code}' -m 20 \
    "http://127.0.0.1:$AXLE_MLFLOW_PORT/api/2.0/mlflow/experiments/search?max_results=1")" == 401 ]]
}

do_mlflow() {
  ensure_system_user mlflow "$MLFLOW_DIR"
  install -d -m 0700 -o root -g root "$SECRETS_DIR"
  secret_ensure "$MLFLOW_PASSWORD_FILE"
  secret_ensure "$MLFLOW_FLASK_KEY_FILE"
  # Runs, artifacts and the user store are MLflow's alone (jobs reach them through its API).
  install -d -m 0700 -o mlflow -g mlflow "$MLFLOW_DIR" "$MLFLOW_DIR/artifacts"
  find "$MLFLOW_DIR" -type d ! -perm 0700 -exec chmod 0700 {} +
  find "$MLFLOW_DIR" -type f -perm /0077 -exec chmod go-rwx {} +
  [[ -e "$LOGS_DIR/mlflow.log" ]] || install -m 0600 -o mlflow -g mlflow /dev/null "$LOGS_DIR/mlflow.log"
  chmod 0600 "$LOGS_DIR/mlflow.log"
  local MLFLOW_AUTH_DB="sqlite:///$MLFLOW_DIR/basic_auth.db"
  render "$HERE/mlflow_auth.ini.in" "$MLFLOW_DIR/basic_auth.ini" 0600 mlflow:mlflow MLFLOW_AUTH_DB MLFLOW_ADMIN_USER
  # One worker process (it serves requests on threads): MLflow's cache of checked logins
  # (mlflow_auth.ini) lives in each worker, and a user deleted through one worker stays
  # accepted by the others until the cache expires. With one, a finished job's login is
  # refused at once.
  local args=(server --app-name basic-auth
    --host 127.0.0.1 --port "$AXLE_MLFLOW_PORT" --workers 1
    --backend-store-uri "sqlite:///$MLFLOW_DIR/mlflow.db"
    --serve-artifacts --artifacts-destination "$MLFLOW_DIR/artifacts")
  # MLflow 3's job execution (a job runner and seven huey consumers, for its GenAI jobs: prompt
  # optimization, online scorers, trace rollups) is off: the hub uses none of it, and it costs
  # eight more Python processes (~230 MB each) that poll all the time.
  local settings=(MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false)
  # A server started with another configuration (an older checkout's) is restarted.
  local config
  config="$({ cat "$MLFLOW_DIR/basic_auth.ini"; printf '%s\n' "${args[@]}" "${settings[@]}"; } | sha256sum | cut -d' ' -f1)"
  if mlflow_alive && mlflow_requires_login && [[ "$(cat "$RUN_DIR/mlflow.config" 2>/dev/null)" == "$config" ]]; then
    echo "MLflow already running, with its login"
    return 0
  fi
  stop_pidfile mlflow "$RUN_DIR/mlflow.pid"
  umask 077
  # The admin password counts only the first time, when the user store is empty.
  MLFLOW_AUTH_CONFIG_PATH="$MLFLOW_DIR/basic_auth.ini" \
    MLFLOW_AUTH_ADMIN_PASSWORD="$(<"$MLFLOW_PASSWORD_FILE")" \
    MLFLOW_FLASK_SERVER_SECRET_KEY="$(<"$MLFLOW_FLASK_KEY_FILE")" \
    spawn "$RUN_DIR/mlflow.pid" "$LOGS_DIR/mlflow.log" mlflow /usr/bin/env "${settings[@]}" "$VENV_DIR/bin/mlflow" "${args[@]}"
  printf '%s\n' "$config" >"$RUN_DIR/mlflow.config"
  wait_up 180 "$RUN_DIR/mlflow.pid" mlflow_alive
  mlflow_requires_login
  # The first signed-in request checks the password hash and opens the user store: on a
  # loaded 2-core machine that took more than 5 s, so it is waited for like the start.
  wait_up 120 "$RUN_DIR/mlflow.pid" mlflow_admin_login_works
}

mlflow_admin_login_works() {
  curl_secret user "$MLFLOW_ADMIN_USER:$(<"$MLFLOW_PASSWORD_FILE")" -fsS -m 20 -o /dev/null \
    "http://127.0.0.1:$AXLE_MLFLOW_PORT/api/2.0/mlflow/experiments/search?max_results=1"
}

# ---------------------------------------------------------------- the model servers' users

# Users' model code (local model servers) runs as unprivileged users: never as root, never as
# the hub's user, with no access to the hub's state, keys or secrets. Each running server has
# a user of its own from a pool (axle-serve-0 … axle-serve-N-1, each with its own primary
# group), so one deployment's model cannot read, signal, trace or impersonate another's.
AXLE_SERVE_USER="${AXLE_MODEL_SERVER_USER:-axle-serve}"
AXLE_SERVE_POOL="${AXLE_MODEL_SERVER_POOL:-8}"
# A pool of the same size for the test suite (portal/settings/test.py), so tests never take or
# stop the slot of a server the demo runs. Only root starts servers as these (no sudoers rule).
AXLE_TEST_SERVE_USER="${AXLE_TEST_MODEL_SERVER_USER:-axle-tserve}"
AXLE_HUB_USER="${AXLE_HUB_USER:-axle}"
SERVING_DIR="$AXLE_STACK_DIR/serving"
SERVE_SUDOERS="/etc/sudoers.d/axle-serve"

do_serving_user() {
  if [[ "$AXLE_MAIN_SITE" != 1 ]]; then
    echo "a second site: the model servers' users are the main site's"
    return 0
  fi
  if [[ ! "$AXLE_SERVE_POOL" =~ ^[1-9][0-9]*$ ]]; then
    echo "AXLE_MODEL_SERVER_POOL must be a positive number, not $AXLE_SERVE_POOL" >&2
    return 1
  fi
  # The servers' folder: root's, passable (not listable) by the slot users; in it one folder
  # per slot, owned by the slot's user, setgid to the hub's group (so only the hub reaches the
  # server's Unix socket and reads its log), closed to everyone else, other slots included.
  # Group root until the hub has a user.
  local group=root tmp i user runas=""
  if getent group "$AXLE_HUB_USER" >/dev/null; then group="$AXLE_HUB_USER"; fi
  install -d -m 0711 -o root -g root "$SERVING_DIR"
  chmod g-s "$SERVING_DIR" # set by an older layout, when one user owned all servers
  for ((i = 0; i < AXLE_SERVE_POOL; i++)); do
    user="$AXLE_SERVE_USER-$i"
    ensure_system_user "$user" "$SERVING_DIR/slot-$i"
    install -d -m 2750 -o "$user" -g "$group" "$SERVING_DIR/slot-$i"
    runas+="${runas:+,}$user"
    ensure_system_user "$AXLE_TEST_SERVE_USER-$i" /nonexistent
  done
  # The one thing the hub may do as a serving user: run a command with an emptied
  # environment (apps/integrations/local_serving/procs.py). Root needs no rule.
  tmp="$(mktemp)"
  printf '%s\n' \
    "# Written by compose/local/stack.sh: the hub ($AXLE_HUB_USER) starts and stops local model" \
    "# servers as $AXLE_SERVE_USER-0..$((AXLE_SERVE_POOL - 1)), always through env -i (an empty environment), and nothing else." \
    "$AXLE_HUB_USER ALL=($runas) NOPASSWD: /usr/bin/env -i *" >"$tmp"
  visudo -cqf "$tmp"
  install -m 0440 -o root -g root "$tmp" "$SERVE_SUDOERS"
  rm -f "$tmp"
  echo "serving users $AXLE_SERVE_USER-0..$((AXLE_SERVE_POOL - 1)) ok: $SERVING_DIR/slot-N (group $group, 2750), $SERVE_SUDOERS"
}

# ---------------------------------------------------------------- the hub's view

do_cluster_env() {
  local user env_file="$AXLE_STACK_DIR/cluster.env"
  user="$(cluster_users | tr '\n' ' ')"
  {
    echo "# Written by compose/local/stack.sh up. Facts the hub needs about the local cluster."
    echo "AXLE_STACK_DIR=$AXLE_STACK_DIR"
    echo "AXLE_LOCAL_CLUSTER_NAME=$AXLE_SLURM_CLUSTER"
    echo "AXLE_LOCAL_SSH_HOST=$AXLE_HOST"
    echo "AXLE_LOCAL_SSH_PORT=$AXLE_SSH_PORT"
    echo "AXLE_LOCAL_SSH_KNOWN_HOSTS=$SSH_DIR/known_hosts"
    echo "AXLE_LOCAL_SSH_HOST_FINGERPRINT=$(<"$SSH_DIR/host_fingerprint")"
    echo "AXLE_LOCAL_REST_URL=http://$AXLE_HOST:$AXLE_SLURMRESTD_PORT"
    echo "AXLE_LOCAL_REST_API_VERSION=$AXLE_REST_API_VERSION"
    echo "AXLE_LOCAL_JWT_KEY_FILE=$SLURM_DIR/jwt_hs256.key"
    echo "AXLE_LOCAL_KEYS_DIR=$KEYS_DIR"
    echo "AXLE_LOCAL_SCRATCH_ROOT=$SCRATCH_ROOT"
    echo "AXLE_LOCAL_PYTHON=$VENV_DIR/bin/python"
    echo "AXLE_LOCAL_USERS=\"${user% }\""
    echo "AXLE_LOCAL_SLURM_CONF=$SLURM_CONF"
    echo "AXLE_LOCAL_SLURM_BIN_DIR=$SLURM_BIN_DIR"
    echo "AXLE_MLFLOW_TRACKING_URI=http://$AXLE_HOST:$AXLE_MLFLOW_PORT"
    echo "AXLE_MLFLOW_USERNAME=$MLFLOW_ADMIN_USER"
    echo "AXLE_MLFLOW_PASSWORD_FILE=$MLFLOW_PASSWORD_FILE"
  } >"$env_file.tmp"
  chmod 0644 "$env_file.tmp"
  mv -f "$env_file.tmp" "$env_file"
  cat "$env_file"
}

# ---------------------------------------------------------------- commands

cmd_up() {
  if [[ "$(id -u)" -ne 0 ]]; then
    echo "stack.sh up must run as root (it installs packages and starts daemons)" >&2
    exit 1
  fi
  local t0="$SECONDS"
  step packages do_packages
  step layout do_layout
  step munge do_munge
  step mariadb do_mariadb
  step users do_users
  step slurm-config do_slurm_config
  step slurmdbd do_slurmdbd
  step accounting do_accounting
  step slurm-operator do_slurm_operator
  step slurmctld do_slurmctld
  step slurmd do_slurmd
  step slurmrestd do_slurmrestd
  step sshd do_sshd
  step venv do_venv
  step serving-user do_serving_user
  step mlflow do_mlflow
  step cluster-env do_cluster_env
  local skipped="" managed u
  managed="$(cluster_users)"
  for u in $AXLE_CLUSTER_USERS; do
    grep -qxF "$u" <<<"$managed" || skipped+=" $u"
  done
  [[ -z "$skipped" ]] || warn "users skipped (their Unix accounts are not the stack's):$skipped"
  say "stack up in $((SECONDS - t0))s; facts for the hub: $AXLE_STACK_DIR/cluster.env"
}

cmd_down() {
  local name
  mkdir -p "$LOGS_DIR"
  for name in mlflow sshd slurmrestd slurmd slurmctld slurmdbd; do
    printf '==> stop %s ... ' "$name"
    if [[ "$name" == slurmrestd ]]; then
      stop_slurmrestd >>"$LOGS_DIR/down.log" 2>&1
      say "ok"
      continue
    fi
    stop_pidfile "$name" "$RUN_DIR/$name.pid" >>"$LOGS_DIR/down.log" 2>&1
    say "ok"
  done
  printf '==> stop munge ... '
  if [[ -s "$RUN_DIR/munged.pid" ]]; then
    stop_pidfile munged "$RUN_DIR/munged.pid" >>"$LOGS_DIR/down.log" 2>&1
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    say "ok"
  else
    say "not this site's (shared with another site on this host)"
  fi
  if [[ -e "$RUN_DIR/mariadbd.started-by-axle" ]]; then
    printf '==> stop mariadb ... '
    stop_pidfile mariadbd "$RUN_DIR/mariadbd.pid" >>"$LOGS_DIR/down.log" 2>&1
    rm -f "$RUN_DIR/mariadbd.started-by-axle"
    say "ok"
  fi
  say "stack down; data kept in $AXLE_STACK_DIR"
}

status_line() {
  local name="$1" where="$2"
  shift 2
  if "$@"; then
    printf '  %-11s %-5s %s\n' "$name" up "$where"
    return 0
  fi
  printf '  %-11s %-5s %s\n' "$name" down "$where"
  return 1
}

cmd_status() {
  local bad=0
  if [[ "$AXLE_MAIN_SITE" == 1 || -s "$RUN_DIR/munged.pid" ]]; then
    status_line munge "$MUNGE_SOCKET" munge_alive || bad=1
  else
    status_line munge "$MUNGE_SOCKET (the main site's)" bash -c 'munge -n | unmunge >/dev/null' || bad=1
  fi
  status_line mariadb "socket /run/mysqld/mysqld.sock" mariadb_up || bad=1
  status_line slurmdbd "127.0.0.1:$AXLE_SLURMDBD_PORT" slurmdbd_alive || bad=1
  status_line slurmctld "127.0.0.1:$AXLE_SLURMCTLD_PORT" slurmctld_alive || bad=1
  status_line slurmd "127.0.0.1:$AXLE_SLURMD_PORT" slurmd_alive || bad=1
  status_line slurmrestd "127.0.0.1:$AXLE_SLURMRESTD_PORT" slurmrestd_alive || bad=1
  status_line sshd "127.0.0.1:$AXLE_SSH_PORT" sshd_alive || bad=1
  status_line mlflow "127.0.0.1:$AXLE_MLFLOW_PORT" mlflow_alive || bad=1
  return "$bad"
}

# stop NAME / start NAME: one daemon of this site, e.g. for an outage drill (bench/chaos.py
# stops slurmctld, sshd, slurmrestd or mlflow of its own site and starts it again).
ONE_DAEMONS="slurmctld slurmd slurmdbd slurmrestd sshd mlflow"

cmd_one() {
  local what="$1" name="${2:-}"
  if ! grep -qw -- "$name" <<<"$ONE_DAEMONS" || [[ -z "$name" ]]; then
    echo "usage: $0 $what {${ONE_DAEMONS// /|}}" >&2
    exit 2
  fi
  if [[ "$what" == stop ]]; then
    local pid children=""
    pid="$(pid_from "$RUN_DIR/$name.pid")" || pid=""
    # A stopped sshd's open sessions would go on serving the hub's cached connection: end
    # them too (only this site's: children of this site's sshd).
    [[ "$name" == sshd && -n "$pid" ]] && children="$(pgrep -P "$pid" || true)"
    stop_pidfile "$name" "$RUN_DIR/$name.pid"
    # Daemons started by spawn() lead a session of their own: their helpers (MLflow's web
    # server workers) go with them.
    if [[ -n "$pid" ]] && kill -0 -- "-$pid" 2>/dev/null; then kill -TERM -- "-$pid" 2>/dev/null || true; fi
    [[ -n "$children" ]] && kill -TERM $children 2>/dev/null || true
  else
    "do_$name"
  fi
}

main() {
  case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    stop | start) cmd_one "$1" "${2:-}" ;;
    *)
      echo "usage: $0 up|down|status|stop NAME|start NAME" >&2
      exit 2
      ;;
  esac
}

main "$@"

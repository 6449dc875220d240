# shellcheck shell=bash disable=SC2034
# (SC2034: the variables here are used by the scripts that source this file.)
# Helpers shared by compose/local/*.sh. Sourced, never run.

AXLE_STACK_DIR="${AXLE_STACK_DIR:-/var/lib/axle}"
AXLE_CLUSTER_USERS="${AXLE_CLUSTER_USERS:-scientist approver admin}"
AXLE_SSH_PORT="${AXLE_SSH_PORT:-2222}"
AXLE_SLURMRESTD_PORT="${AXLE_SLURMRESTD_PORT:-6820}"
AXLE_MLFLOW_PORT="${AXLE_MLFLOW_PORT:-5000}"
AXLE_SLURMCTLD_PORT="${AXLE_SLURMCTLD_PORT:-6817}"
AXLE_SLURMD_PORT="${AXLE_SLURMD_PORT:-6818}"
AXLE_SLURMDBD_PORT="${AXLE_SLURMDBD_PORT:-6819}"
AXLE_SLURM_CLUSTER="${AXLE_SLURM_CLUSTER:-local}"
# A second site beside the first on one host (e.g. the chaos bench's, AXLE_STACK_DIR=
# /var/lib/axle-chaos): its own ports (above), ClusterName, state, slurmdbd database and MariaDB
# user, and MLflow; it shares the host's munged, MariaDB server, Unix users and the first site's
# Python environment, and leaves /etc/slurm/slurm.conf pointing at the first site.
AXLE_SLURMDBD_DB="${AXLE_SLURMDBD_DB:-slurm_acct_db}"
AXLE_SLURMDBD_DB_USER="${AXLE_SLURMDBD_DB_USER:-slurm}"
# 1 for the host's main site: it owns /etc/slurm/slurm.conf and the model servers' users.
if [[ -z "${AXLE_MAIN_SITE:-}" ]]; then
  if [[ "$AXLE_STACK_DIR" == /var/lib/axle ]]; then AXLE_MAIN_SITE=1; else AXLE_MAIN_SITE=0; fi
fi
# Unprivileged account for slurmrestd: it refuses to run as root or as SlurmUser.
AXLE_SLURMREST_USER="${AXLE_SLURMREST_USER:-slurmrest}"
# How slurmrestd serves (issue 14): `inetd` (default) runs one slurmrestd per connection under a
# socket supervisor (systemd-socket-activate --accept --inetd, the command-line form of a systemd
# socket unit with Accept=yes), so what a connection made slurmrestd allocate is freed when it
# closes; `listen` is one long-lived daemon (slurmrestd 22.05 keeps what big answers allocated).
AXLE_SLURMRESTD_MODE="${AXLE_SLURMRESTD_MODE:-inetd}"
# Marks the Unix accounts this stack created, so it never adopts someone else's.
AXLE_USER_GECOS="Axle local cluster user"
# Slurm's API version pair served by 22.05 (it also serves v0.0.36 and v0.0.37).
AXLE_REST_API_VERSION="v0.0.38"
AXLE_HOST="127.0.0.1"

export DEBIAN_FRONTEND=noninteractive

LOGS_DIR="$AXLE_STACK_DIR/logs"
RUN_DIR="$AXLE_STACK_DIR/run"
SLURM_DIR="$AXLE_STACK_DIR/slurm"
MUNGE_DIR="$AXLE_STACK_DIR/munge"
SSH_DIR="$AXLE_STACK_DIR/ssh"
KEYS_DIR="$AXLE_STACK_DIR/keys"
MLFLOW_DIR="$AXLE_STACK_DIR/mlflow"
VENV_DIR="${AXLE_VENV_DIR:-$AXLE_STACK_DIR/venv}"
SCRATCH_ROOT="$AXLE_STACK_DIR/cluster/scratch"
# munge's default socket: Slurm ignores AuthInfo=socket= on some paths (sacctmgr to
# slurmdbd), and every client finds the default without configuration.
MUNGE_SOCKET="/run/munge/munge.socket.2"
export SLURM_CONF="$SLURM_DIR/etc/slurm.conf"
# Where the hub finds Slurm's commands on this site's login node (see do_slurm_config).
if [[ "$AXLE_MAIN_SITE" == 1 ]]; then SLURM_BIN_DIR=/usr/bin; else SLURM_BIN_DIR="$SLURM_DIR/bin"; fi

say() { printf '%s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }

# curl_secret NAME VALUE CURL-ARG...: curl with one secret option (`user`, `header`, ...)
# read from a config on its stdin (`curl -K -`), never from its command line, which any user
# on the host can read in /proc/PID/cmdline. printf is a builtin: no process sees it either.
curl_secret() {
  local name="$1" value="$2"
  shift 2
  value="${value//\\/\\\\}"
  value="${value//\"/\\\"}"
  printf '%s = "%s"\n' "$name" "$value" | curl -K - "$@"
}

# step NAME COMMAND [ARG...]: runs COMMAND with its output in logs/up-NAME.log and prints
# the verdict. It runs in a subshell outside any `if`, so `set -e` really applies inside it.
# ./dev sets STEP_LOG_DIR and STEP_LOG_PREFIX to keep the hub's step logs apart.
step() {
  # Daemons write logs/<daemon>.log; a step of `up` writes logs/up-<step>.log.
  local name="$1" dir="${STEP_LOG_DIR:-$LOGS_DIR}" log rc
  log="$dir/${STEP_LOG_PREFIX-up-}$1.log"
  shift
  printf '==> %s ... ' "$name"
  mkdir -p "$dir"
  printf '\n--- %s %s\n' "$(date -Is)" "$name" >>"$log"
  set +e
  ("$@") >>"$log" 2>&1 </dev/null
  rc=$?
  set -e
  if [[ "$rc" -eq 0 ]]; then
    say "ok"
  else
    say "FAILED"
    printf 'step "%s" failed (exit %s); its log: %s\n' "$name" "$rc" "$log" >&2
    tail -n 15 "$log" | sed 's/^/    /' >&2
    exit 1
  fi
}

# pkg_ensure PKG...: installs only the packages that are missing.
pkg_ensure() {
  local missing=() p
  for p in "$@"; do
    # `dpkg -s` alone also succeeds for a removed package whose config files remain.
    [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == "install ok installed" ]] || missing+=("$p")
  done
  [[ "${#missing[@]}" -eq 0 ]] && return 0
  echo "installing: ${missing[*]}"
  # Debian's maintainer scripts would start the packaged daemons with their own
  # configuration; this stack starts its own instances, so keep them down.
  local policy="/usr/sbin/policy-rc.d" added=0
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    added=1
  fi
  if ! apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-confold "${missing[@]}" </dev/null; then
    echo "apt-get install failed; retrying once after apt-get update"
    apt-get update </dev/null
    apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-confold "${missing[@]}" </dev/null
  fi
  [[ "$added" -eq 1 ]] && rm -f "$policy"
  return 0
}

# render TEMPLATE DEST MODE OWNER VAR...: replaces @VAR@ with the value of $VAR.
render() {
  local tpl="$1" dest="$2" mode="$3" owner="$4" text var tmp
  shift 4
  text="$(<"$tpl")"
  for var in "$@"; do
    text="${text//@${var}@/${!var}}"
  done
  if [[ "$text" == *@[A-Z_]*@* ]] && grep -qE '@[A-Z_]+@' <<<"$text"; then
    echo "unrendered placeholder left in $tpl: $(grep -oE '@[A-Z_]+@' <<<"$text" | sort -u | tr '\n' ' ')" >&2
    return 1
  fi
  tmp="$(mktemp "$dest.XXXXXX")"
  printf '%s\n' "$text" >"$tmp"
  chmod "$mode" "$tmp"
  chown "$owner" "$tmp"
  mv -f "$tmp" "$dest"
}

# port_listening PORT: something listens on 127.0.0.1:PORT (or on all addresses).
port_listening() {
  ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}

pid_from() {
  local f="$1" pid
  [[ -r "$f" ]] || return 1
  pid="$(tr -dc '0-9' <"$f")"
  [[ -n "$pid" ]] || return 1
  printf '%s' "$pid"
}

# pid_is PID PIDFILE: PID is alive and is the daemon the pidfile is named after
# (<name>.pid), so a stale pidfile whose pid was reused never points at a stranger.
pid_is() {
  local pid="$1" name
  name="$(basename "$2" .pid)"
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$name"
}

# alive PIDFILE [PORT]: the pidfile names a live process and, if given, the port listens.
alive() {
  local pid
  pid="$(pid_from "$1")" || return 1
  pid_is "$pid" "$1" || return 1
  if [[ -n "${2:-}" ]]; then
    port_listening "$2" || return 1
  fi
  return 0
}

# wait_for SECONDS COMMAND...: polls COMMAND every half second.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    if ((SECONDS >= deadline)); then
      echo "timed out waiting for: $*" >&2
      return 1
    fi
    sleep 0.5
  done
}

# wait_up SECONDS PIDFILE COMMAND...: like wait_for, but gives up as soon as the process
# named by PIDFILE has died (a daemon that forks may write its pidfile a little late).
wait_up() {
  local deadline=$((SECONDS + $1)) pidfile="$2" pid
  shift 2
  until "$@"; do
    if ((SECONDS >= deadline)); then
      echo "timed out waiting for: $*" >&2
      return 1
    fi
    if pid="$(pid_from "$pidfile")" && ! kill -0 "$pid" 2>/dev/null; then
      echo "the process ($pid from $pidfile) has exited; see its log" >&2
      return 1
    fi
    sleep 0.5
  done
}

# stop_pidfile NAME PIDFILE: TERM, wait, then KILL. Silent when not running.
stop_pidfile() {
  local name="$1" pidfile="$2" pid i
  pid="$(pid_from "$pidfile")" || return 0
  if pid_is "$pid" "$pidfile"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "$name did not stop on TERM; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
}

# spawn PIDFILE LOG USER COMMAND...: runs a foreground-only daemon detached, as USER.
# setpriv execs in place, so the recorded pid is the daemon itself.
spawn() {
  local pidfile="$1" log="$2" user="$3"
  shift 3
  if [[ "$user" == root ]]; then
    setsid "$@" >>"$log" 2>&1 </dev/null &
  else
    HOME="$(getent passwd "$user" | cut -d: -f6)" \
      setsid setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups -- "$@" >>"$log" 2>&1 </dev/null &
  fi
  echo "$!" >"$pidfile"
}

ensure_system_user() {
  local user="$1" home="$2"
  if ! id -u "$user" >/dev/null 2>&1; then
    useradd --system --user-group --home-dir "$home" --no-create-home --shell /usr/sbin/nologin "$user"
  fi
}

# shellcheck shell=bash
# The hub's place on a host: its Unix user and the layout of $AXLE_HOME/hub. Sourced by
# ./dev (after lib.sh) and by tests/stack/test_host_isolation.py, never run.
#
# The portal and the worker run as AXLE_HUB_USER, an unprivileged system user; only the
# install steps run as root. Everything under the hub's folder (database, secret key,
# encryption key, static files, logs, pid files) is that user's alone: folders 0700,
# files 0600, its serving state (`serving`, AXLE_SERVING_DIR) included. Model servers run as
# users of their own (see the serving backend), in folders outside the hub's
# ($AXLE_HOME/serving/slot-N, made by compose/local/stack.sh).

AXLE_HUB_USER="${AXLE_HUB_USER:-axle}"

# hub_user_ensure: the hub's system user exists (idempotent), homed in $AXLE_HOME/hub
# whatever folder is being laid out (the tests lay out folders of their own).
hub_user_ensure() {
  ensure_system_user "$AXLE_HUB_USER" "${AXLE_HOME:-/var/lib/axle}/hub"
}

# hub_layout HUB_DIR: creates the hub's folders and takes back anything in them that an
# earlier root-run left behind (a database made by `./dev up` before the hub had a user of
# its own, or logs opened by root): owned by the hub's user, unreadable to anyone else.
hub_layout() {
  local hub="$1" d
  hub_user_ensure
  for d in "$hub" "$hub/logs" "$hub/run" "$hub/static"; do
    install -d -m 0700 -o "$AXLE_HUB_USER" -g "$AXLE_HUB_USER" "$d"
  done
  find "$hub" \( ! -user "$AXLE_HUB_USER" -o ! -group "$AXLE_HUB_USER" \) \
    -exec chown -h "$AXLE_HUB_USER:$AXLE_HUB_USER" {} +
  find "$hub" -type d ! -perm 0700 -exec chmod 0700 {} +
  find "$hub" -type f -perm /0077 -exec chmod go-rwx {} +
}

# hub_log_ensure FILE...: log files the hub's processes append to (root opens some of them
# for a process it starts), made the hub user's and 0600 before anyone writes to them.
hub_log_ensure() {
  local f
  for f in "$@"; do
    [[ -e "$f" ]] || install -m 0600 -o "$AXLE_HUB_USER" -g "$AXLE_HUB_USER" /dev/null "$f"
  done
}

# hub_secret_install SOURCE DEST: a copy of a root-held secret for the hub (0600, hub's
# user), replaced atomically; nothing is printed.
hub_secret_install() {
  local src="$1" dest="$2"
  install -m 0600 -o "$AXLE_HUB_USER" -g "$AXLE_HUB_USER" "$src" "$dest.tmp"
  mv -f "$dest.tmp" "$dest"
}

# as_hub COMMAND...: runs COMMAND as the hub's user with the current environment, under a
# umask that keeps whatever it creates to itself. No --no-new-privs: the serving backend
# starts model servers through `sudo -n -u axle-serve-N`.
as_hub() {
  (
    umask 077
    HOME="$(getent passwd "$AXLE_HUB_USER" | cut -d: -f6)" USER="$AXLE_HUB_USER" LOGNAME="$AXLE_HUB_USER" \
      exec setpriv --reuid="$AXLE_HUB_USER" --regid="$(id -g "$AXLE_HUB_USER")" --init-groups -- "$@"
  )
}

# hub_can_read PATH...: the hub's user can read every PATH (the checkout and the venv must
# not sit under a folder only root can enter, such as /root).
hub_can_read() {
  local p
  for p in "$@"; do
    as_hub test -r "$p" || return 1
  done
}

# hub_audit_checkpoint_ensure FILE: the signed audit checkpoint file exists, the hub user's
# (0600), and append-only (`chattr +a`): not even the hub's own user can then rewrite, empty
# or delete it, only add lines (apps/audit/checkpoints.py). A filesystem or container that
# refuses the attribute gets a warning, not a failure: the file still works, only unprotected.
# Removing it takes `chattr -a FILE` as root first (./dev down says so).
hub_audit_checkpoint_ensure() {
  local file="$1"
  install -d -m 0700 -o "$AXLE_HUB_USER" -g "$AXLE_HUB_USER" "$(dirname "$file")"
  [[ -e "$file" ]] || install -m 0600 -o "$AXLE_HUB_USER" -g "$AXLE_HUB_USER" /dev/null "$file"
  if lsattr -d "$file" 2>/dev/null | cut -d' ' -f1 | grep -q a; then
    return 0
  fi
  if ! chattr +a "$file" 2>/dev/null; then
    echo "WARNING: could not make $file append-only (chattr +a; filesystem $(stat -f -c %T "$file" 2>/dev/null || echo unknown)):" \
      "the hub's own user could rewrite its audit checkpoints. See README, Audit trail." >&2
  fi
}

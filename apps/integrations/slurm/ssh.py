"""`SlurmClient` over SSH: Slurm's own commands on the cluster's login host, run as the
grant's cluster user, through one pinned-host-key connection reused for many calls.

    with SSHClient(host, port, username, private_key, host_key=fingerprint) as slurm:
        job_id = slurm.submit(request)
        jobs = slurm.queue(username)
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import logging
import math
import posixpath
import re
import secrets
import select
import shlex
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Self, TypeVar

import paramiko

from . import config, environment, parsing
from .base import (
    AmbiguousSubmitError,
    ClusterFiles,
    ClusterState,
    FairShare,
    HostKeyError,
    JobInfo,
    SlurmError,
    SlurmRejected,
    StartEstimate,
    SubmitRequest,
    TransportError,
    UsageWindow,
    bounded,
    submit_refusal,
)
from .sshfiles import SSHFiles

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_COMMAND_TIMEOUT = 60.0
#: How often the reader thread of an idle connection wakes (paramiko's own step: 0.1 s).
IDLE_WAKE_SECONDS = 5.0
DEFAULT_SLURM_BIN_DIR = "/usr/bin"
# What Slurm's query commands run with: nothing from the user's login environment (no
# PATH, LD_PRELOAD, SQUEUE_FORMAT, SLURM_TIME_FORMAT...) changes what they do or print.
QUERY_ENVIRONMENT = ("PATH=/usr/bin:/bin", "LANG=C.UTF-8", "LC_ALL=C.UTF-8")
SLURM_PROGRAMS = frozenset({"sbatch", "squeue", "sacct", "sinfo", "scancel", "scontrol", "sacctmgr", "sshare"})

# Writes the job's environment file where only the cluster user can read it: the login
# session's environment (what sbatch would pass on with --export=ALL, less Slurm's own
# input and output variables and less the names the job sets), then the job's variables
# from stdin, all NUL-separated. mktemp creates it 0600; the rename makes it whole or absent.
# Before writing, it removes the files an earlier attempt left when the connection broke
# between writing and sbatch and the hub could not clean up (older than 10 minutes: never
# one a submission is using now).
_WRITE_ENV_FILE = (
    "login=$PATH; PATH=/usr/bin:/bin; umask 077; f=$1; shift; "
    'find "${f%/*}" -maxdepth 1 -name ".axle-env-*" -type f -mmin +10 -delete 2>/dev/null; '
    't=$(mktemp "$f.XXXXXX") || exit 45; '
    'if { PATH=$login /usr/bin/env -0 "$@" | grep -zEv \'^(SLURM|SBATCH|SALLOC|SRUN)_\'; cat; } > "$t" '
    '&& mv -f -- "$t" "$f"; then exit 0; fi; rm -f -- "$t"; exit 45'
)
# Opens the environment file as fd 3 and removes it before sbatch starts: the variables
# (a per-job credential among them) are on disk only between the two commands.
_SBATCH_WITH_ENV = '[ -f "$1" ] || exit 45; exec 3< "$1"; rm -f -- "$1"; shift; exec "$@"'


# One command that submits a batch of jobs. The hub sends, on stdin, one program: this library,
# then what it writes (each job's script and variables, as `printf` formats: every byte that is
# not plain printable ASCII written as an octal escape, so any byte, NUL included, arrives as it
# is, and no value is ever on a command line or in a process's environment), then the sbatch
# calls, every word quoted with shlex.quote. The program's last bytes are a random end mark, also
# on stdin's first line with the program's length: `_BATCH_BOOT` reads exactly that length and
# runs it only if the mark is there, so a stream cut short submits nothing (exit 44). The program writes everything
# into a private folder (0700) first, prints AXLE-READY, then runs sbatch for each job, a wave of
# up to SUBMIT_PARALLEL at a time, and prints one line per job:
#   AXLE<TAB>marker<TAB>exit status<TAB>sbatch's stdout<TAB>sbatch's stderr in base64
# so a connection that breaks half-way leaves exact knowledge of the jobs already answered; the
# others are ambiguous and reconciled by their markers. `W` as exit status: the job's folder or
# environment file could not be written (nothing was submitted for it).
#
# What it costs on the login node (bench/ssh_batch.py): the batch's processes are a fixed few
# (`head`, a `mkdir` for itself and one for the jobs' folders unless they all exist, `env | grep |
# tee` once per set of variable names, `rm` at the end; every TIDY_SECONDS a `find` in the
# background for folders killed batches left); a job's is its one `sbatch` (forked once; `env -i` then
# execs it). Everything else is the shell's builtins: `printf` writes the files, `read` takes
# sbatch's answer, `wait` its status; `base64` runs only for a job that printed on stderr. The
# job's environment file is the login session's environment (what sbatch would pass on with
# --export=ALL, less Slurm's own input and output variables and less the names the job sets),
# written once for all the jobs that set the same names (`tee`), then the job's own variables
# appended. The folder and every file in it go with the program's end (`trap`); one a killed
# program left is removed by a later batch's `find` (older than 10 minutes).
_BATCH_BOOT = (
    # `set +xv` first: a login that turns on tracing (bash as sh, SHELLOPTS=xtrace) would print
    # the program, and the jobs' variables in it, on stderr. The first line of stdin is the
    # program's length and its end mark (`read` takes that line byte by byte, no further): the
    # command line holds nothing of the batch's.
    'set +xv; read -r n e || exit 44; [ -n "$e" ] || exit 44; p=$(head -c "$n") || exit 44; '
    'case $p in *"$e") ;; *) printf "\\nAXLE-ABORT the batch arrived cut short\\n"; exit 44 ;; esac; eval "$p"'
)
_BATCH_COMMAND = ("/bin/sh", "-c", _BATCH_BOOT, "sh")
# How long a one-job program sent ahead (`SSHClient.stage_one`) may wait for its go; an older
# one is closed unused (its shell reads end of input, and its sbatch an empty script: nothing
# is submitted).
SPARE_SECONDS = 10.0
_BATCH_LIBRARY = r"""
login=$PATH; PATH=/usr/bin:/bin; umask 077
tidy() {
  { find "${TMPDIR:-/tmp}" -maxdepth 1 -name 'axle-batch-*' -user "$(id -u)" -mmin +10 -exec rm -rf -- {} +; } \
    </dev/null >/dev/null 2>&1 &
}
abort() { printf '\nAXLE-ABORT %s\n' "$1"; exit 44; }
mkdir -m 700 -- "$B" 2>/dev/null || abort "cannot make a temporary folder"
trap 'rm -rf -- "$B"' EXIT
trap 'exit 143' HUP INT TERM PIPE
folders() {
  for d; do { [ -d "$d" ] && [ -w "$d" ]; } || { mkdir -p -- "$@" 2>/dev/null; return; }; done
}
base() {
  g=$1; pat=$2; shift 2
  for i; do set -- "$@" "$B/$i.e"; shift; done
  PATH=$login /usr/bin/env -0 | grep -zEv "$pat" | tee -- "$@" >/dev/null 2>"$B/t$g.r"
}
ok() { for i; do eval "k$i=1"; done; }
said() { printf '\nAXLE\t%s\tW\t\t%s\n' "$1" "$(printf %s "$2" | base64 -w0)"; }
go() {
  i=$1; m=$2; d=$3; g=$4; shift 4
  eval "p$i="
  if ! { [ -d "$d" ] && [ -w "$d" ]; }; then
    r=$(mkdir -p -- "$d" 2>&1)  # this folder's own reason (the batch's mkdir said nothing)
    if ! { [ -d "$d" ] && [ -w "$d" ]; }; then
      said "$m" "${r:-cannot write to the folder $d}"; return
    fi
  fi
  eval "k=\${k$i-}"
  if [ -z "$k" ]; then
    r=; [ -s "$B/t$g.r" ] && r=$(cat -- "$B/t$g.r")
    said "$m" "cannot write the job's environment in $B${r:+: $r}"; return
  fi
  "$@" 2>"$B/$i.r" 3<"$B/$i.e" <"$B/$i.s" >"$B/$i.o" &
  eval "p$i=\$!"
}
reap() {
  while [ $# -gt 0 ]; do
    i=$1; m=$2; shift 2
    eval "p=\$p$i"
    [ -n "$p" ] || continue
    wait "$p"; rc=$?
    if [ ! -e "$B/$i.o" ]; then
      # Its stdout is the last redirection: without it sbatch never started.
      r=; [ -s "$B/$i.r" ] && r=$(cat -- "$B/$i.r")
      said "$m" "cannot start sbatch with its files in $B${r:+: $r}"; continue
    fi
    # sbatch --parsable prints the id on its last line (a site's wrapper may print more first).
    out=; while IFS= read -r l || [ -n "$l" ]; do [ -n "$l" ] && out=$l; done <"$B/$i.o"
    err=; [ -s "$B/$i.r" ] && err=$(base64 -w0 <"$B/$i.r")
    printf 'AXLE\t%s\t%s\t%s\t%s\n' "$m" "$rc" "$out" "$err"
  done
}
"""
# A batch of one job (a sweep's wave, a single submission): the same boot, end mark, folder
# check and answers as `_BATCH_LIBRARY`, without its machinery. No private folder and no files:
# sbatch reads its script from a pipe `printf` fills, and its environment (fd 3) from another
# that the login environment (`env -0 | grep`: less Slurm's own variables and the names the
# job sets) and then the job's variables (`printf`) fill; so nothing of the job's is ever on
# disk, and there is no `mkdir` of a private folder, no `tee`, no `trap`'s `rm`. Its processes:
# the boot's `head`, `env`, `grep` and sbatch (`mkdir` only for a missing job folder, `base64`
# only when sbatch printed on stderr). sbatch's stdout reaches the hub as it is (the id read on
# its last line), its stderr is kept in a variable, and the last line is
#   AXLE-ONE<TAB>marker<TAB>exit status<TAB>sbatch's stderr in base64
# Slurm reads an --export-file given as a descriptor until its end, so a pipe serves as a file.
# The environment's pipe is filled and sbatch started at once (it loads, reads slurm.conf and
# waits for its script), but the script is written only when the line after the program is
# the end mark again (the go; `proceed` prints AXLE-READY then): a submission sends it right
# after the program, and one sent ahead of its caller's commit (`SSHClient.stage_one`) sends
# it later on the same channel. A channel that closes before it leaves sbatch an empty
# script, which sbatch refuses before it asks Slurm for anything: nothing is submitted. So the
# cluster's sbatch (`slurm_bin_dir`; a site's wrapper there too) must take the job's script
# from its stdin before it submits, as sbatch does; `--wrap` (a job with no script on stdin)
# is refused in the hub's own options (`_sbatch_words`).
_ONE_LIBRARY = r"""
login=$PATH; PATH=/usr/bin:/bin; umask 077; mark=$e
said() { printf '\nAXLE\t%s\tW\t\t%s\n' "$1" "$(printf %s "$2" | base64 -w0)"; }
tidy() {
  { find "${TMPDIR:-/tmp}" -maxdepth 1 -name 'axle-batch-*' -user "$(id -u)" -mmin +10 -exec rm -rf -- {} +; } \
    </dev/null >/dev/null 2>&1 &
}
proceed() { read -r g <&7 && [ "$g" = "$mark" ] && printf '\nAXLE-READY\n' >&5; }
one() {
  m=$1; d=$2; pat=$3; shift 3
  if ! { [ -d "$d" ] && [ -w "$d" ]; }; then
    r=$(mkdir -p -- "$d" 2>&1)
    if ! { [ -d "$d" ] && [ -w "$d" ]; }; then said "$m" "${r:-cannot write to the folder $d}"; return; fi
  fi
  # fd 4: the environment's pipe, 5: the hub's stdout (sbatch's own), 6: the program's stderr,
  # 7: the hub's stdin. The environment is written into its pipe and sbatch started at once;
  # sbatch reads its script from the other pipe to its end before it asks Slurm for anything,
  # and the script is written only once the hub's next line is the end mark again
  # (`proceed`): a program sent ahead of its transaction's commit (`SSHClient.stage_one`)
  # waits there with sbatch loaded, and one whose channel closes first gives sbatch an empty
  # script, which it refuses ("Batch script is empty!"): nothing is submitted.
  { e=$( { { PATH=$login /usr/bin/env -0 | grep -zEv "$pat"; vars; } 0</dev/null 2>&6 5>&- 7<&- \
    | { { proceed && script; } 0</dev/null 4<&- 6>&- | exec "$@" 3<&4 4<&- 5>&- 6>&- 7<&-; } 4<&0; } 2>&1 >&5 ); } \
    5>&1 6>&2 7<&0
  rc=$?
  [ -z "$e" ] || e=$(printf '%s\n' "$e" | base64 -w0)
  printf '\nAXLE-ONE\t%s\t%s\t%s\n' "$m" "$rc" "$e"
}
"""
# Jobs of one batch in sbatch at once on the login node (slurmctld serves concurrent RPCs;
# its own locks serialize what must be). More buys little on a small controller.
SUBMIT_PARALLEL = 4
# How often a connection's batches look for the private folders of killed batches (older than
# ten minutes) to remove them.
TIDY_SECONDS = 300
# Environment files one `tee` writes at most (each is an open file of its; a login node's limit
# on open files is often 1024).
_TEE_FILES = 64
# Bytes a `printf` format may hold as they are; every other byte, and `'` `\` `%`, is escaped.
_UNPRINTABLE = re.compile(rb"[^\x20-\x7e]|['\\%]")


def _escape_byte(match: re.Match[bytes]) -> bytes:
    byte = match.group()
    return b"%%" if byte == b"%" else b"\\%03o" % byte[0]


def printf_word(data: bytes) -> bytes:
    """`data` as one single-quoted shell word that `printf` prints back byte for byte (an
    octal escape for every byte outside printable ASCII, for the quote and for the
    backslash; `%%` for the percent sign): sh's builtin printf writes it, no process."""
    return b"'" + _UNPRINTABLE.sub(_escape_byte, data) + b"'"


def slurm_argv(
    bin_dir: str, args: Sequence[str], *, clean_env: bool = True, env: Mapping[str, str] | None = None
) -> list[str]:
    """`args` with Slurm's program named by its absolute path on the cluster, run with a
    fixed environment (plus the hub's own `env`) unless it must pass the login one on:
    sbatch gives it to the job."""
    program, *rest = args
    if program not in SLURM_PROGRAMS:
        raise ValueError(f"{program} is not one of Slurm's commands")
    command = [posixpath.join(bin_dir, program), *rest]
    if not clean_env:
        return command
    return ["/usr/bin/env", "-i", *QUERY_ENVIRONMENT, *(f"{k}={v}" for k, v in (env or {}).items()), *command]


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's 'SHA256:...' fingerprint of a public key (as `ssh-keygen -lf` prints)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class PinnedHostKey:
    """What the admin confirmed: known_hosts lines and/or SHA256 fingerprints."""

    fingerprints: frozenset[str]

    @classmethod
    def parse(cls, pinned: str | Sequence[str]) -> PinnedHostKey:
        """Accepts 'SHA256:...' fingerprints, known_hosts lines ('host type base64'),
        or public key lines ('type base64 [comment]'), one per item or line."""
        items = [pinned] if isinstance(pinned, str) else list(pinned)
        prints: set[str] = set()
        for item in items:
            for line in item.splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if line.startswith("SHA256:"):
                    prints.add(line.split()[0])
                    continue
                prints.add(_fingerprint_of_key_line(line))
        if not prints:
            raise HostKeyError("No pinned host key was configured for this cluster.")
        return cls(frozenset(prints))


def _fingerprint_of_key_line(line: str) -> str:
    words = line.split()
    if words and words[0].startswith("@"):  # @cert-authority / @revoked markers
        raise HostKeyError(f"Unsupported known_hosts marker {words[0]}.")
    for i, word in enumerate(words[:-1]):
        if word.startswith(("ssh-", "ecdsa-", "sk-")):
            blob = base64.b64decode(words[i + 1])
            digest = hashlib.sha256(blob).digest()
            return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
    raise HostKeyError(f"Cannot read a host key from {line[:40]!r}.")


class _PinnedPolicy(paramiko.MissingHostKeyPolicy):
    """Accept exactly the pinned key. The client's own known-hosts store is left empty
    so that every key goes through this check; nothing is ever added or saved."""

    def __init__(self, pinned: PinnedHostKey) -> None:
        self.pinned = pinned

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        presented = fingerprint(key)
        if presented not in self.pinned.fingerprints:
            raise HostKeyError(
                f"The host key of {hostname} is {key.get_name()} {presented}, which is not the "
                "pinned key. It may have been reinstalled or someone may be intercepting the "
                "connection; an administrator must confirm the new key."
            )


def load_private_key(key: str | paramiko.PKey, passphrase: str | None = None) -> paramiko.PKey:
    if isinstance(key, paramiko.PKey):
        return key
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(key), password=passphrase)
        except (paramiko.SSHException, ValueError):
            continue
    # never echo the key material itself
    raise TransportError("The cluster private key cannot be read.", permanent=True)


@dataclass
class CommandResult:
    exit_status: int | None  # None: the answer was read whole before the command exited
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace").strip()


class _NoSFTP(Exception):
    """The login host refused an SFTP session on a live connection (no `sftp` subsystem, or
    a login shell that prints before the subsystem answers): files go through commands."""


class _ConnectionLost(Exception):
    """The channel died after the command had been sent. `partial` is what it printed on
    stdout before that (a batch of submissions reports each one as soon as it is done)."""

    def __init__(self, message: str, partial: bytes = b"", *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.partial = partial
        # The command outlived its time limit on a live connection (it may still be running):
        # not a connection that died under it.
        self.timed_out = timed_out


@dataclass
class _JobWords:
    """One job as a batch program says it: its index, marker and folder, its variables (an
    export file), the names the login environment leaves out (a grep pattern), its script
    (a printf word) and its sbatch command."""

    i: int
    marker: str
    folder: str
    variables: bytes = field(repr=False)  # the job's variables: never in a log or a traceback
    pattern: str = ""
    script: bytes = field(repr=False, default=b"")
    argv: list[str] = field(default_factory=list)


@dataclass
class _Spare:
    """A one-job program sent ahead (`SSHClient.stage_one`): its channel, when it was sent,
    the program (without the `tidy` line) and its end mark."""

    channel: paramiko.Channel
    at: float
    core: bytes = field(repr=False)  # holds the job's variables
    end: str
    sending: _Sending


class _Sending:
    """A channel's input sent by a thread of its own: OpenSSH's sshd opens a session's window
    only once it has started the command (a fork and exec on the login host), and paramiko's
    `sendall` waits for that. `sent` waits for the end of it."""

    def __init__(self, channel: paramiko.Channel, data: bytes) -> None:
        self.done = False  # set only once sendall returned: all of it went
        self._thread = threading.Thread(target=self._send, args=(channel, data), name="axle-ssh-send", daemon=True)
        self._thread.start()

    def _send(self, channel: paramiko.Channel, data: bytes) -> None:
        try:
            channel.sendall(data)
        except (paramiko.SSHException, OSError, EOFError):  # the channel closed under it
            return
        self.done = True

    def sent(self, timeout: float) -> bool:
        """Whether all of it was sent (waited for at most `timeout`)."""
        self._thread.join(timeout)
        return self.done


class _Refused(environment.EnvironmentRefused):
    """A submission the hub's own options make impossible to send as sbatch takes a job."""


def _sbatch_words(req: SubmitRequest, flags: Sequence[str]) -> tuple[bytes, list[str]]:
    """A submission's environment file (its variables, NUL-separated) and its sbatch command
    (with `flags`; the file on fd 3), for one job alone and for a batch alike. Raises
    EnvironmentRefused for variables no environment can hold (and `_Refused`, one of those,
    for `--wrap` among the hub's options): the callers answer it as Slurm refusing the job."""
    variables = environment.export_file(req.env)
    if req.job_name and "\x00" not in req.job_name:
        # With --export-file, Slurm 22.05's sbatch leaves SLURM_JOB_NAME out of the job's
        # environment, and slurmstepd expands %x in log names from it ("(null)").
        variables += f"SLURM_JOB_NAME={req.job_name}".encode() + b"\x00"
    if any(a == "--wrap" or a.startswith("--wrap=") for a in req.extra_args):
        # A job's script is its stdin, which a one-job program gives sbatch only at its go.
        raise _Refused("--wrap is not one of the hub's own sbatch options: a job's script is its own")
    args = ["sbatch", *flags, "--export-file=3"]
    if req.job_name:
        args.append(f"--job-name={req.job_name}")
    if req.comment:
        args.append(f"--comment={req.comment}")
    if req.workdir:
        args.append(f"--chdir={req.workdir}")
    args.extend(req.extra_args)
    return variables, args


def _exec_request(channel: paramiko.Channel, command: str) -> None:
    """Ask the login host to run `command` on `channel` without waiting for its answer: what
    paramiko's `Channel.exec_command` sends (paramiko 5.1), its wait left to `_exec_answered`.
    SSH lets the command's input follow the request at once (the server takes a channel's
    messages in order), so a program sent ahead (`SSHClient.stage_one`) costs the caller one
    round trip (the channel's opening), not the login host's start of a session."""
    m = paramiko.Message()
    m.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
    m.add_int(channel.remote_chanid)
    m.add_string("exec")
    m.add_boolean(True)
    m.add_string(command)
    channel._event_pending()
    channel.transport._send_user_message(m)


def _one_answered(marker: str) -> Callable[[bytes], bool]:
    """Whether a one-job program's output holds its last line, `AXLE-ONE` for `marker` with
    its end of line, after an AXLE-READY line (`_ONE_LIBRARY`'s `one` prints nothing after
    it). Without AXLE-READY the program never got its go: it is read to its end as before
    (the parser then says that nothing was submitted)."""
    head = f"\nAXLE-ONE\t{marker}\t".encode()

    def answered(out: bytes) -> bool:
        at = out.rfind(head)
        ready = 0 if out.startswith(b"AXLE-READY\n") else out.find(b"\nAXLE-READY\n")
        return 0 <= ready < at and out.find(b"\n", at + len(head)) >= 0

    return answered


def _exec_answered(channel: paramiko.Channel, timeout: float) -> bool:
    """Whether the login host said yes to `_exec_request` (waiting at most `timeout`)."""
    return channel.event.wait(timeout) and channel.event_ready and not channel.closed


def _wait_readable(channel: paramiko.Channel, seconds: float) -> None:
    poller = select.poll()
    poller.register(channel.fileno(), select.POLLIN)
    poller.poll(seconds * 1000)


class SSHClient:
    """One SSH connection to a cluster's login host, as one cluster user.

    Not thread-safe: a worker opens one per cluster and poll cycle, uses it for all of
    that cycle's calls, and closes it (`with SSHClient(...) as c:`).
    """

    submit_makes_folders = True  # submit_many creates each job's folder itself

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        private_key: str | paramiko.PKey,
        host_key: str | Sequence[str],
        *,
        passphrase: str | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
        slurm_bin_dir: str = DEFAULT_SLURM_BIN_DIR,
    ) -> None:
        if not posixpath.isabs(slurm_bin_dir):
            raise TransportError(f"Slurm's folder {slurm_bin_dir!r} is not an absolute path.", permanent=True)
        self.slurm_bin_dir = slurm_bin_dir
        self.host = host
        self.port = port
        self.username = username
        self._key = load_private_key(private_key, passphrase)
        self._pinned = PinnedHostKey.parse(host_key)
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._client: paramiko.SSHClient | None = None
        # The connection's SFTP session (`sftp()`), opened on first use and closed with it;
        # `_sftp_refused` once the login host said no, for this client's lifetime.
        self._sftp: paramiko.SFTPClient | None = None
        self._sftp_refused = False
        self._files = SSHFiles(self)
        self._tidied = -math.inf  # when a batch last looked for folders killed batches left
        # A one-job program sent ahead of its go (`stage_one`); the next `submit_many` takes it.
        self._spare: _Spare | None = None

    def __repr__(self) -> str:  # the key must never show up in logs or tracebacks
        return f"SSHClient({self.username}@{self.host}:{self.port})"

    # ---------------------------------------------------------------- connection

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        if self._client is not None and self._alive():
            return
        self.close()
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(_PinnedPolicy(self._pinned))
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.username,
                pkey=self._key,
                timeout=bounded(self.connect_timeout),
                banner_timeout=bounded(self.connect_timeout),
                auth_timeout=bounded(self.connect_timeout),
                channel_timeout=bounded(self.connect_timeout),
                allow_agent=False,
                look_for_keys=False,
            )
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(f"The host key of {self.host} changed: {exc}") from None
        except paramiko.AuthenticationException:
            client.close()
            raise TransportError(
                f"The cluster refused the key of user {self.username} on {self.host}.",
                permanent=True,
            ) from None
        except (TimeoutError, OSError, paramiko.SSHException, EOFError) as exc:
            client.close()
            raise TransportError(
                f"Cannot connect to {self.host}:{self.port}: {exc or type(exc).__name__}",
                permanent=False,
            ) from None
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(30)
            # Each command is a few small packets; with Nagle's algorithm on they wait for
            # the server's delayed ACK, about 40 ms per command (measured in bench/).
            sock = getattr(transport, "sock", None)
            if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if isinstance(sock, socket.socket):
                # paramiko's reader thread wakes every 0.1 s on a quiet connection (its socket
                # timeout) to look at keepalives and rekeying. A portal process keeps one or two
                # idle connections per account for its log tails: 200 accounts were ~10 % of a
                # core in those wake-ups alone (13 ms of CPU per second per 50 connections,
                # 1.4 ms at 2 s), and each took the GIL from the requests. Data still wakes it
                # at once; keepalives (30 s) need no finer step, and the thread of a closed
                # connection (marked inactive at once) ends within the step.
                sock.settimeout(IDLE_WAKE_SECONDS)
        self._client = client

    def _alive(self) -> bool:
        transport = self._client.get_transport() if self._client else None
        return bool(transport and transport.is_active())

    def close(self) -> None:
        self._sftp = None  # its channel closes with the connection
        self._take_staged(None)
        if self._client is not None:
            self._client.close()
            self._client = None

    # ---------------------------------------------------------------- SFTP

    #: The subsystem asked for (a test asks for one the server does not have).
    sftp_subsystem = "sftp"

    def sftp(self) -> paramiko.SFTPClient:
        """The connection's SFTP session, opened on first use and kept with the connection:
        a file operation over it is a request to the session's server, with no shell and no
        process started on the login node. Raises `_NoSFTP` when the host refuses one (then
        and for the rest of this client's life), TransportError when it cannot be opened."""
        if self._sftp_refused:
            raise _NoSFTP
        self.connect()
        if self._sftp is not None and self.sftp_open(self._sftp):
            return self._sftp
        self._sftp = None
        assert self._client is not None
        transport = self._client.get_transport()
        channel = None
        try:
            assert transport is not None
            channel = transport.open_session(timeout=bounded(self.connect_timeout))
            channel.settimeout(bounded(self.connect_timeout))
            channel.invoke_subsystem(self.sftp_subsystem)
            sftp = paramiko.SFTPClient(channel)
        except (paramiko.SSHException, paramiko.SFTPError, OSError, EOFError, AssertionError) as exc:
            if channel is not None:
                channel.close()
            # Refused: the session opened and then the subsystem was said no to (or its first
            # answer was not SFTP's). A session that cannot open at all is the connection's fault.
            if channel is not None and self._alive() and not isinstance(exc, TimeoutError):
                self._sftp_refused = True
                log.info("%s offers no SFTP session (%s): files are read with commands", self.host, exc)
                raise _NoSFTP from None
            self.close()
            raise TransportError(f"Cannot open an SFTP session on {self.host}: {exc}", permanent=False) from None
        self._sftp = sftp
        return sftp

    def sftp_open(self, sftp: paramiko.SFTPClient) -> bool:
        """Whether `sftp` can still carry requests: its channel open on a live connection."""
        channel = sftp.get_channel()
        return channel is not None and not channel.closed and self._alive()

    def drop_sftp(self) -> None:
        """Close the SFTP session (not the connection): one left mid-request (a time-out) may
        hold a late answer; the next `sftp()` opens a fresh one."""
        sftp, self._sftp = self._sftp, None
        if sftp is not None:
            sftp.close()

    # ---------------------------------------------------------------- commands

    def run(
        self,
        args: Sequence[str],
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run one command; every word is quoted, so nothing in it is shell syntax.

        There is deliberately no way to pass environment variables: a command line is
        visible to every user of the login node (`ps`), and variables given to a command
        change what it runs. Data goes through stdin.

        Raises TransportError if the command could not be started (nothing ran) and
        _ConnectionLost if the connection died after it was sent (it may have run)."""
        return self._exec(" ".join(shlex.quote(w) for w in args), stdin=stdin, timeout=timeout)

    def stage_one(self, req: SubmitRequest) -> bool:
        """Send the program that submits `req` alone (`submit_many([req])`) now, before the
        caller may submit it (its transaction has not committed yet), on this client's live
        connection (none: nothing is sent; the caller bounds the rest with `deadline`): the login node starts
        the shell, reads the program and the login environment, and waits for one more line
        before sbatch (`one`'s `proceed`). The next `submit_many` within SPARE_SECONDS, if
        it is of exactly this request, sends only that line; any other closes the channel,
        and so does `close()`: its shell reads end of input, its sbatch an empty script, and
        nothing is submitted. Nothing is awaited but the channel's opening: the command is
        asked for without waiting for the answer (`_exec_request`), and the program sent by a
        thread once the login host has started it (`_Sending`). Best effort: a program that
        cannot be sent leaves the submission to send its own; nothing is raised. Whether a
        program was sent."""
        try:
            core = self._one_program(self._job_words(req, 0), tidy="")
        except environment.EnvironmentRefused:
            return False
        end = f"AXLE-END-{secrets.token_hex(8)}"
        body = core + f"\n# {end}".encode()
        self._take_staged(None)
        if not self._alive():
            return False  # never connects: a connection to make is the submission's own business
        channel = None
        try:
            assert self._client is not None
            transport = self._client.get_transport()
            assert transport is not None
            channel = transport.open_session(timeout=bounded(self.connect_timeout))
            _exec_request(channel, " ".join(shlex.quote(w) for w in _BATCH_COMMAND))
        except (TransportError, paramiko.SSHException, OSError, EOFError, AssertionError) as exc:
            if channel is not None:
                channel.close()
            log.info("Could not send a submission ahead to %s: %s", self.host, exc)
            return False
        # The program goes as soon as the login host has started the command, without the
        # caller waiting for that (`_Sending`).
        sending = _Sending(channel, f"{len(body)} {end}\n".encode() + body)
        self._spare = _Spare(channel, time.monotonic(), core, end, sending)
        return True

    def unstage(self) -> None:
        """Close the program `stage_one` sent, if one waits: its caller will not send the go
        (its transaction failed). Its shell reads end of input and its sbatch an empty
        script: nothing is submitted, and nothing of it waits on the login node."""
        self._take_staged(None)

    def expire_staged(self) -> None:
        """Close the program `stage_one` sent if it has waited longer than SPARE_SECONDS (no
        submission would take it any more), as its connection goes back to the pool."""
        if self._spare is not None and time.monotonic() - self._spare.at > SPARE_SECONDS:
            self._take_staged(None)

    def _take_staged(self, core: bytes | None) -> tuple[paramiko.Channel, str] | None:
        """The channel `stage_one` sent the one-job program `core` on, and its end mark, if it
        still waits on a live connection, was sent at most SPARE_SECONDS ago and has all of
        its program (its sending waited for at most the connection's timeout). Any other
        staged program (or this one, past its time or not sent in full) is closed: nothing of
        it is submitted."""
        spare, self._spare = self._spare, None
        if spare is None:
            return None
        if (
            core == spare.core
            and time.monotonic() - spare.at <= SPARE_SECONDS
            and spare.sending.sent(bounded(self.connect_timeout))
            and not (spare.channel.closed or spare.channel.eof_received or spare.channel.exit_status_ready())
            and self._alive()
        ):
            return spare.channel, spare.end
        spare.channel.close()
        return None

    def _exec(
        self,
        command: str,
        *,
        stdin: bytes | None,
        timeout: float | None,
        channel: paramiko.Channel | None = None,
        answered: Callable[[bytes], bool] | None = None,
    ) -> CommandResult:
        """Run `command` (on `channel`, a spare already running it, when given). `answered`:
        the command's stdout so far holds all of its answer, so its exit is not waited for
        (its status is then None)."""
        self.connect()
        assert self._client is not None
        transport = self._client.get_transport()
        if channel is None:
            try:
                assert transport is not None
                channel = transport.open_session(timeout=bounded(self.connect_timeout))
                channel.exec_command(command)
            except (paramiko.SSHException, OSError, EOFError, AssertionError) as exc:
                self.close()
                raise TransportError(f"Cannot start a command on {self.host}: {exc}", permanent=False) from None
        try:
            if stdin is not None:
                try:
                    channel.sendall(stdin)
                except OSError:
                    # A command may end without reading all its input (`cd` failing first):
                    # its answer is still there to collect. Anything else is a lost connection.
                    if not channel.exit_status_ready():
                        raise
            if not channel.closed:
                channel.shutdown_write()
            return self._collect(channel, bounded(timeout or self.command_timeout), answered)
        except (paramiko.SSHException, OSError, EOFError, _ConnectionLost) as exc:
            self.close()
            raise _ConnectionLost(
                str(exc) or type(exc).__name__,
                getattr(exc, "partial", b""),
                timed_out=getattr(exc, "timed_out", False),
            ) from None
        finally:
            channel.close()

    def _collect(
        self, channel: paramiko.Channel, timeout: float, answered: Callable[[bytes], bool] | None = None
    ) -> CommandResult:
        # Drain both streams together: a command filling stderr's window while we block
        # on stdout would hang both ends. Done means exit status and end of output.
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        try:
            return self._drain(channel, out, err, deadline, timeout, answered)
        except _ConnectionLost as exc:
            exc.partial = bytes(out)
            raise
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise _ConnectionLost(str(exc) or type(exc).__name__, bytes(out)) from None

    def _drain(
        self,
        channel: paramiko.Channel,
        out: bytearray,
        err: bytearray,
        deadline: float,
        timeout: float,
        answered: Callable[[bytes], bool] | None = None,
    ) -> CommandResult:
        while True:
            progressed = False
            while channel.recv_ready():
                out += channel.recv(65536)
                progressed = True
            while channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
                progressed = True
            if progressed and answered is not None and answered(bytes(out)):
                # All of the answer is here: the shell's exit, sshd's status and end of output
                # would add 0.4-1 ms (up to 2.5) and nothing to read.
                return CommandResult(None, bytes(out), bytes(err))
            if channel.exit_status_ready() and (channel.eof_received or channel.closed):
                if not channel.recv_ready() and not channel.recv_stderr_ready():
                    break
                continue
            if not self._alive():
                raise _ConnectionLost("the connection closed before the command finished")
            if time.monotonic() > deadline:
                raise _ConnectionLost(f"no answer within {timeout:.0f}s", timed_out=True)
            if not progressed:
                # Woken by the answer instead of sleeping a fixed step past it: the channel's
                # pipe is set by data on either stream and by EOF, the status event by the exit
                # status (which may follow EOF); the step bounds a missed wake-up. poll, not
                # select: a busy process's descriptors pass 1024, which select refuses.
                if channel.eof_received or channel.closed:
                    channel.status_event.wait(0.005)
                else:
                    _wait_readable(channel, 0.005)
        return CommandResult(channel.recv_exit_status(), bytes(out), bytes(err))

    def slurm_command(
        self, args: Sequence[str], *, clean_env: bool = True, env: Mapping[str, str] | None = None
    ) -> list[str]:
        return slurm_argv(self.slurm_bin_dir, args, clean_env=clean_env, env=env)

    def _query(self, args: Sequence[str]) -> CommandResult:
        """A read-only command: a lost connection is just a transient transport error."""
        try:
            return self.run(args)
        except _ConnectionLost as exc:
            raise TransportError(f"Lost the connection to {self.host}: {exc}", permanent=False) from None

    # ---------------------------------------------------------------- SlurmClient

    @property
    def files(self) -> ClusterFiles:
        """The cluster's files as this user, over this same connection."""
        return self._files

    def submit(self, req: SubmitRequest) -> str:
        result = self._sbatch(req, ["--parsable"])
        if result.exit_status != 0:
            raise submit_refusal(result.err or f"sbatch exited with status {result.exit_status}")
        job_id = parsing.parse_sbatch_parsable(result.out)
        if job_id is None:
            raise AmbiguousSubmitError(f"sbatch succeeded but printed no job id: {result.out!r}")
        return job_id

    def test_only(self, req: SubmitRequest) -> StartEstimate:
        # The very path a submission takes (environment file, options, script on stdin), so
        # Slurm judges exactly what would be submitted; --test-only makes sbatch stop short.
        try:
            result = self._sbatch(req, ["--test-only"], env=parsing.TIME_ENV)
        except AmbiguousSubmitError as exc:  # nothing can have been submitted with --test-only
            raise TransportError(str(exc), permanent=False) from None
        if result.exit_status != 0:
            raise SlurmRejected(result.err.strip() or f"sbatch --test-only exited with status {result.exit_status}")
        estimate = parsing.parse_test_only(result.err + result.out)
        if estimate is None:
            return StartEstimate(start=None, message=(result.err + result.out).strip())
        return estimate

    def fairshare(self) -> list[FairShare]:
        result = self._query(self.slurm_command(parsing.sshare_args(self.username)))
        self._check(result, "sshare")
        try:
            return parsing.parse_sshare(result.out)
        except parsing.UnreadableOutput as exc:
            raise SlurmError(f"Cannot read what sshare printed on {self.host}: {exc}", permanent=False) from None

    def _sbatch(self, req: SubmitRequest, flags: Sequence[str], env: Mapping[str, str] | None = None) -> CommandResult:
        try:
            variables, args = _sbatch_words(req, flags)
        except environment.EnvironmentRefused as exc:
            raise SlurmRejected(str(exc)) from None
        # The job's environment is the file alone (sbatch merges nothing else into it with
        # --export-file), so sbatch itself runs in the fixed environment: no SBATCH_* from
        # a login script changes what it submits.
        path = self._write_env_file(req.workdir or ".", variables, sorted(req.env))
        command = ["/bin/sh", "-c", _SBATCH_WITH_ENV, "sh", path, *self.slurm_command(args, env=env)]
        try:
            result = self.run(command, stdin=req.script.encode())
        except _ConnectionLost as exc:
            self._remove_env_file(path)
            raise AmbiguousSubmitError(
                f"The connection to {self.host} broke while sbatch was running ({exc}); "
                "the job may or may not have been submitted."
            ) from None
        except TransportError:
            self._remove_env_file(path)  # sbatch never started: the file would stay
            raise
        if result.exit_status == 45:  # the environment file vanished: sbatch never started
            raise SlurmError(f"The job's environment file {path} is gone; submitting again.", permanent=False)
        return result

    def _job_words(self, req: SubmitRequest, i: int) -> _JobWords:
        """What a batch program says of one job. Raises EnvironmentRefused for variables no
        environment can hold."""
        variables, args = _sbatch_words(req, ["--parsable"])
        pattern = "^(SLURM|SBATCH|SALLOC|SRUN)_"
        if req.env:
            pattern += "|^(" + "|".join(re.escape(name) for name in sorted(req.env)) + ")="
        folder = req.workdir or "."
        return _JobWords(
            i, req.comment, folder, variables, pattern, printf_word(req.script.encode()), self.slurm_command(args)
        )

    @staticmethod
    def _one_program(job: _JobWords, tidy: str) -> bytes:
        """`_ONE_LIBRARY`'s program for one job (the `tidy` line after the library)."""
        return b"".join(
            [
                _ONE_LIBRARY.encode(),
                tidy.encode(),
                b"vars() { printf " + printf_word(job.variables) + b"; }\n",
                b"script() { printf " + job.script + b"; }\n",
                b"one " + " ".join(shlex.quote(w) for w in [job.marker, job.folder, job.pattern, *job.argv]).encode(),
            ]
        )

    def submit_many(self, reqs: Sequence[SubmitRequest]) -> dict[str, str | SlurmError]:
        """All of `reqs` with one SSH command (see _BATCH_LIBRARY): one round trip, one
        sbatch per job on the cluster, each job's answer its own."""
        answers: dict[str, str | SlurmError] = {}
        writes: list[bytes] = []
        groups: dict[str, list[tuple[int, bytes]]] = {}  # the login variables left out -> (job, its variables)
        folders: dict[str, None] = {}
        sent = []
        jobs = []
        for i, req in enumerate(reqs):
            try:
                job = self._job_words(req, i)
            except environment.EnvironmentRefused as exc:
                answers[req.comment] = SlurmRejected(str(exc))
                continue
            jobs.append(job)
            groups.setdefault(job.pattern, []).append((i, job.variables))
            folders[job.folder] = None
            writes.append(b"printf " + job.script + f' >"$B/{i}.s" || abort "cannot write $B"'.encode())
            sent.append((req.comment, i, [req.comment, job.folder, *job.argv]))
        if not sent:
            self._take_staged(None)
            return answers
        if len(reqs) == 1:
            # One job (a sweep's wave, most single submissions): `_ONE_LIBRARY`, no files; on
            # the command `stage_one` sent it on, if it holds this very program.
            core = self._one_program(jobs[0], tidy="")
            if (staged := self._take_staged(core)) is not None:
                if _exec_answered(staged[0], bounded(self.connect_timeout)):
                    return self._run_batch(core, sent, answers, one=True, staged=staged)
                staged[0].close()  # the login host did not start it: no go was sent, nothing ran
            return self._run_batch(self._one_program(jobs[0], tidy=self._tidy_line()), sent, answers, one=True)
        self._take_staged(None)
        # The login environment read once per set of names the jobs set, and written by one `tee`
        # into at most _TEE_FILES environment files (each an open file of tee's).
        group_of: dict[int, int] = {}
        slices = [
            (pattern, members[start : start + _TEE_FILES])
            for pattern, members in groups.items()
            for start in range(0, len(members), _TEE_FILES)
        ]
        for g, (pattern, members) in enumerate(slices):
            group_of.update((i, g) for i, _ in members)
            writes.append(f"if base {g} {shlex.quote(pattern)} {' '.join(str(i) for i, _ in members)}; then".encode())
            writes += [b"printf " + printf_word(v) + f' >>"$B/{i}.e" && ok {i}'.encode() for i, v in members]
            writes.append(b"fi")
        waves = []
        for start in range(0, len(sent), SUBMIT_PARALLEL):
            wave = sent[start : start + SUBMIT_PARALLEL]
            for _, i, (marker, folder, *argv) in wave:
                words = [str(i), marker, folder, str(group_of[i]), *argv]
                waves.append("go " + " ".join(shlex.quote(w) for w in words))
            waves.append("reap " + " ".join(f"{i} {shlex.quote(marker)}" for marker, i, _ in wave))
        head = f"B=${{TMPDIR:-/tmp}}/axle-batch-{secrets.token_hex(8)}" + _BATCH_LIBRARY + self._tidy_line()
        head += "folders " + " ".join(shlex.quote(f) for f in folders) + "\n"
        tail = "\n".join(["", "printf '\\nAXLE-READY\\n'", *waves])
        return self._run_batch(head.encode() + b"\n".join(writes) + tail.encode(), sent, answers)

    def _tidy_line(self) -> str:
        """`tidy` (the folders killed batches left, older than ten minutes, removed in the
        background): in this connection's first batch and then every TIDY_SECONDS, not in
        every batch (a `find` of the temporary folder each)."""
        if time.monotonic() - self._tidied <= TIDY_SECONDS:
            return ""
        self._tidied = time.monotonic()
        return "tidy\n"

    def _run_batch(
        self,
        program: bytes,
        sent: list,
        answers: dict[str, str | SlurmError],
        *,
        one: bool = False,
        staged: tuple[paramiko.Channel, str] | None = None,
    ) -> dict[str, str | SlurmError]:
        """Run a batch program (`_BATCH_LIBRARY`'s, or `_ONE_LIBRARY`'s for `one` job) and read
        each job's answer from what it printed. `staged`: the channel `stage_one` sent this
        `one` program on, and its end mark (the line that lets it go on to sbatch)."""
        timeout = self.command_timeout + 2.0 * len(sent)
        try:
            if staged is not None:
                channel, end = staged
                command = " ".join(shlex.quote(w) for w in _BATCH_COMMAND)
                result = self._exec(
                    command,
                    stdin=f"{end}\n".encode(),
                    timeout=timeout,
                    channel=channel,
                    answered=_one_answered(sent[0][0]),
                )
            else:
                # The program's last bytes are a random end mark: a stream cut short lacks
                # them. A `one` program goes on to sbatch at the line after it, the mark again.
                end = f"AXLE-END-{secrets.token_hex(8)}"
                body = program + f"\n# {end}".encode()
                stdin = f"{len(body)} {end}\n".encode() + body + (f"{end}\n".encode() if one else b"")
                result = self.run(list(_BATCH_COMMAND), stdin=stdin, timeout=timeout)
            output, lost = result.stdout, None
        except _ConnectionLost as exc:
            result, output, lost = None, exc.partial, str(exc)
        # TransportError (the command never started) goes to the caller: nothing was sent.
        text = output.decode("utf-8", "replace")
        complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
        ready = False
        printed: list[str] = []  # sbatch's stdout, for `one` job (it goes to the hub as it is)
        for line in complete.splitlines():
            if line == "AXLE-READY":
                ready = True
                continue
            if line.startswith("AXLE-ABORT"):
                continue
            if one and ready and line.startswith("AXLE-ONE\t"):
                # sbatch --parsable prints the id on its last line (a site's wrapper may print more first).
                parts = line.split("\t")
                out = next((p for p in reversed(printed) if p), "")
                line = "\t".join(["AXLE", parts[1], parts[2], out, parts[-1]]) if len(parts) == 4 else ""
            elif one and ready:
                printed.append(line)
                continue
            fields = line.split("\t")
            if len(fields) < 5 or fields[0] != "AXLE":
                continue
            # sbatch's stdout (its lines joined) may hold a tab; the other fields cannot.
            marker, status, out, err64 = fields[1], fields[2], "\t".join(fields[3:-1]), fields[-1]
            try:
                err = base64.b64decode(err64).decode("utf-8", "replace").strip()
            except ValueError:
                err = err64
            if status == "W":
                answers[marker] = SlurmError(f"Cannot prepare the job's folder on {self.host}: {err}", permanent=False)
            elif status != "0":
                # As for one job: a controller that cannot be reached is an outage (the job
                # waits, or is searched for), not Slurm refusing the job.
                answers[marker] = submit_refusal(err or f"sbatch exited with status {status}")
            else:
                job_id = parsing.parse_sbatch_parsable(out)
                answers[marker] = job_id or AmbiguousSubmitError(f"sbatch succeeded but printed no job id: {out!r}")
        for marker, _, _ in sent:
            if marker in answers:
                continue
            if not ready:
                # The program's own reason (an AXLE-ABORT line), not the shell's stderr: the
                # program holds the jobs' variables, and stderr is whatever the login shell says.
                aborts = [line[len("AXLE-ABORT ") :] for line in complete.splitlines() if line.startswith("AXLE-ABORT")]
                ended = f"it ended with status {result.exit_status}" if result is not None else "the batch was refused"
                if lost and not aborts:
                    # The connection broke before the program's word came: it may have been on
                    # its way (the program prints AXLE-READY and then gives sbatch its script), so the job
                    # is looked for by its marker rather than sent again.
                    answers[marker] = AmbiguousSubmitError(
                        f"The connection to {self.host} broke before the batch said whether it reached "
                        f"sbatch ({lost.strip()}); the job may or may not have been submitted."
                    )
                    continue
                why = lost or (aborts[0] if aborts else ended)
                answers[marker] = SlurmError(
                    f"The batch never reached sbatch on {self.host} ({why.strip()}); nothing was submitted.",
                    permanent=False,
                )
            else:
                why = lost or "no answer for this job"
                answers[marker] = AmbiguousSubmitError(
                    f"The connection to {self.host} broke while sbatch was running ({why}); "
                    "the job may or may not have been submitted."
                )
        return answers

    def _remove_env_file(self, path: str) -> None:
        """Best effort, on a fresh connection, after the submitting one broke: the file holds
        the job's credential. If the cluster cannot be reached now, the file (0600, the
        cluster user's own) stays in the job folder until the next submission there
        removes it (_WRITE_ENV_FILE), ten minutes on."""
        try:
            self.run(["/bin/rm", "-f", "--", path])
        except (TransportError, _ConnectionLost) as exc:
            log.warning("could not remove the environment file %s on %s: %s", path, self.host, exc)

    def _write_env_file(self, folder: str, variables: bytes, names: Sequence[str]) -> str:
        """Write the job's environment file in `folder`, readable by the cluster user only,
        and return its path. Values travel on stdin, never on a command line (the names,
        which are checked identifiers, do: `env -u NAME` leaves the login value out).

        (Private to the submit path for now: the hub's file layer is the place for it.)"""
        path = posixpath.join(folder, f".axle-env-{secrets.token_hex(8)}")
        unset = [word for name in names for word in ("-u", name)]
        try:
            result = self.run(["/bin/sh", "-c", _WRITE_ENV_FILE, "sh", path, *unset], stdin=variables)
        except _ConnectionLost as exc:
            raise TransportError(f"Lost the connection to {self.host}: {exc}", permanent=False) from None
        if result.exit_status != 0:
            raise SlurmError(f"Cannot write the job's environment file in {folder}: {result.err}", permanent=False)
        return path

    def queue(self, user: str, *, memo: parsing.SqueueMemo | None = None) -> list[JobInfo]:
        delimiter = parsing.new_delimiter()
        result = self._slurm(parsing.squeue_args(delimiter, user))
        jobs = self._parsed(functools.partial(parsing.parse_squeue, memo=memo), result.out, delimiter)
        return [job for job in jobs if job.user == user]

    def accounting(self, job_ids: list[str]) -> list[JobInfo]:
        if not job_ids:
            return []
        delimiter = parsing.new_delimiter()
        result = self._slurm(parsing.sacct_args(delimiter, job_ids))
        return self._parsed(parsing.parse_sacct, result.out, delimiter)

    def find_by_comment(self, marker: str) -> list[JobInfo]:
        return self.find_by_comments([marker]).get(marker, [])

    def find_by_comments(self, markers: Sequence[str]) -> dict[str, list[JobInfo]]:
        # squeue keeps finished jobs for MinJobAge (300 s by default), which covers a
        # worker restarting; accounting only has comments with
        # AccountingStoreFlags=job_comment, so it is the fallback, not the source. One
        # squeue (and at most one sacct) however many markers are looked for.
        wanted = set(markers)
        found: dict[str, list[JobInfo]] = {}
        if not wanted:
            return found
        delimiter = parsing.new_delimiter()
        result = self._slurm(parsing.squeue_args(delimiter, None, all_states=True))
        for job in self._parsed(parsing.parse_squeue, result.out, delimiter):
            if job.comment in wanted:
                found.setdefault(job.comment, []).append(job)
        missing = wanted - set(found)
        if missing:
            delimiter = parsing.new_delimiter()
            result = self._slurm([*parsing.sacct_args(delimiter, since="now-7days"), f"--user={self.username}"])
            for job in self._parsed(parsing.parse_sacct, result.out, delimiter):
                if job.comment in missing:
                    found.setdefault(job.comment, []).append(job)
        return found

    def usage(self, window: UsageWindow) -> list[JobInfo]:
        delimiter = parsing.new_delimiter()
        args = parsing.sacct_window_args(delimiter, window)
        if not (window.users or window.accounts):
            args.append(f"--user={self.username}")
        result = self._slurm(args)
        return self._parsed(parsing.parse_sacct, result.out, delimiter)

    def cancel(self, job_id: str) -> None:
        result = self._query(self.slurm_command(["scancel", job_id]))
        if result.exit_status != 0 or result.err:
            raise SlurmRejected(result.err or f"scancel exited with status {result.exit_status}")

    def cancel_many(self, job_ids: Sequence[str]) -> None:
        # One scancel for all; a job among them that already ended makes scancel say so on
        # stderr, which must not stop the others being cancelled (they are, in that one call).
        if not job_ids:
            return
        result = self._query(self.slurm_command(["scancel", *job_ids]))
        if result.exit_status != 0:
            raise SlurmRejected(result.err or f"scancel exited with status {result.exit_status}")

    def cluster_state(self) -> ClusterState:
        delimiter = parsing.new_delimiter()
        result = self._slurm(parsing.sinfo_args(delimiter))
        state = self._parsed(parsing.parse_sinfo, result.out, delimiter)
        # The defaults Slurm gives a job that does not say: one scontrol for the
        # partitions, one for the cluster-wide values they inherit.
        partitions = self._query(self.slurm_command(config.PARTITIONS_ARGS))
        self._check(partitions, "scontrol show partition")
        settings = self._query(self.slurm_command(config.CONFIG_ARGS))
        self._check(settings, "scontrol show config")
        return config.apply_partition_config(state, partitions.out, config.parse_config(settings.out))

    def ping(self) -> None:
        result = self._query(self.slurm_command(["scontrol", "ping"]))
        if result.exit_status != 0 or "UP" not in result.out:
            raise TransportError(
                f"The Slurm controller does not answer: {(result.out + result.err).strip()}",
                permanent=False,
            )

    def _slurm(self, args: Sequence[str]) -> CommandResult:
        """A Slurm query that must succeed, times in Unix seconds."""
        result = self._query(self.slurm_command(args, env=parsing.TIME_ENV))
        self._check(result, args[0])
        return result

    def _parsed(self, parser: Callable[[str, str], T], output: str, delimiter: str) -> T:
        try:
            return parser(output, delimiter)
        except parsing.UnreadableOutput as exc:
            # Never a partial or shifted answer: tracking acts on what it reads.
            raise SlurmError(f"Cannot read what Slurm printed on {self.host}: {exc}", permanent=False) from None

    def _check(self, result: CommandResult, what: str) -> None:
        if result.exit_status != 0:
            # squeue/sacct failing usually means slurmctld/slurmdbd is down: transient.
            raise SlurmError(
                f"{what} failed (exit {result.exit_status}): {result.err}",
                permanent=False,
            )

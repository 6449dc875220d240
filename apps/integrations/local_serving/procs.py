"""Process bookkeeping on Linux through /proc: who is alive, since when, in which group.

A pid alone is not an identity: after a crash the number can be handed to an unrelated
process. A server is ours only if its pid, its start time (clock ticks since boot, field 22
of /proc/<pid>/stat), the boot it started in, and the marker we put in its environment all
match what we recorded when we started it."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
MARKER = "AXLE_LOCAL_SERVING_ID"


@dataclass(frozen=True)
class ProcStat:
    pid: int
    state: str  # R, S, D, Z (zombie), X (dead), …
    ppid: int
    pgid: int
    start_ticks: int


def parse_stat(text: str) -> ProcStat:
    """Parse one /proc/<pid>/stat line. The command name (field 2) sits in parentheses and
    may itself contain spaces and parentheses, so split after the last ')'."""
    head, _, rest = text.rpartition(")")
    pid = int(head.split("(", 1)[0])
    fields = rest.split()
    # rest starts at field 3 (state); field N is fields[N - 3].
    return ProcStat(pid=pid, state=fields[0], ppid=int(fields[1]), pgid=int(fields[2]), start_ticks=int(fields[19]))


def parse_environ(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in data.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def read_stat(pid: int) -> ProcStat | None:
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def read_marker(pid: int) -> str | None:
    try:
        return parse_environ((PROC / str(pid) / "environ").read_bytes()).get(MARKER)
    except OSError:
        return None


def boot_id() -> str:
    try:
        return (PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def reap(pid: int) -> None:
    """Collect the exit status if `pid` is our own child, so it does not linger as a zombie
    in a long-lived worker; a no-op for processes we adopted."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    except OSError:
        pass


def is_ours(pid: int, start_ticks: int, boot: str, token: str) -> bool:
    """True while the process we started is running (not a zombie, not a reused pid)."""
    if not pid or boot != boot_id():
        return False
    reap(pid)
    st = read_stat(pid)
    if st is None or st.state in ("Z", "X") or st.start_ticks != start_ticks:
        return False
    return read_marker(pid) == token


def members(token: str, pgid: int | None = None) -> list[int]:
    """Live processes carrying our marker `token` (in process group `pgid`, if given):
    the server and anything it spawned, even if the leader is already gone."""
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        st = read_stat(pid)
        if st is None or st.state in ("Z", "X") or (pgid is not None and st.pgid != pgid):
            continue
        if read_marker(pid) == token:
            found.append(pid)
    return found


def terminate(token: str, pgid: int, grace: float = 10.0) -> bool:
    """SIGTERM the server's group, SIGKILL what is left after `grace` seconds. Every
    process signalled is checked for our marker first, so a reused pid or group id is never
    touched. Returns True when nothing with the marker is left."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        pids = members(token, pgid) or members(token)
        if not pids:
            return True
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not members(token):
                for pid in pids:
                    reap(pid)  # our own children are zombies now: collect them
                return True
            time.sleep(0.1)
    return not members(token)

"""The hub's view of a model server process, through /proc, and how it acts as a serving user.

A pid alone is not an identity: after a crash the number can be handed to an unrelated
process. A server is ours only if its pid, its start time (clock ticks since boot), the boot
it started in, its owner (the serving user) and its command line (which names the socket
under the server's own token) all match what was recorded when it started. The hub may not
read another user's environment, so the environment marker is checked by the launcher, which
runs as the serving user, when it stops a server."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from apps.integrations.serving.base import ServingError

from . import launch

PROC = launch.PROC
MARKER = launch.MARKER
LAUNCHER_SOURCE = Path(launch.__file__).read_text()
boot_id = launch.boot_id
parse_environ = launch.parse_environ
SUDO = "/usr/bin/sudo"
ENV = "/usr/bin/env"


@dataclass(frozen=True)
class ProcStat:
    pid: int
    state: str  # R, S, D, Z (zombie), X (dead), …
    ppid: int
    pgid: int
    start_ticks: int


def parse_stat(text: str) -> ProcStat:
    return ProcStat(*launch.parse_stat(text))


def read_stat(pid: int) -> ProcStat | None:
    found = launch.read_stat(pid)
    return ProcStat(*found) if found else None


def read_uid(pid: int) -> int | None:
    """The real uid of `pid` (readable for any process, unlike its environment)."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def read_cmdline(pid: int) -> bytes:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return b""


def runs_as(uid: int) -> bool:
    """True when any live process has the real uid `uid` (a slot user still busy)."""
    for entry in PROC.iterdir():
        if entry.name.isdigit() and read_uid(int(entry.name)) == uid:
            st = read_stat(int(entry.name))
            if st is not None and st.state not in ("Z", "X"):
                return True
    return False


def is_ours(pid: int, start_ticks: int, boot: str, uid: int, needle: str) -> bool:
    """True while the server we started is running (not a zombie, not a reused pid)."""
    if not pid or not needle or boot != boot_id():
        return False
    st = read_stat(pid)
    if st is None or st.state in ("Z", "X") or st.start_ticks != start_ticks:
        return False
    return read_uid(pid) == uid and needle.encode() in read_cmdline(pid)


@dataclass(frozen=True)
class ServingUser:
    """An unprivileged Unix user a model server runs as (one of the pool `axle-serve-N`, one
    per running server), and how the hub acts as it: always through `sudo -n -u <user> --
    /usr/bin/env -i …`, whether the hub runs as root (tests, a one-host stack before it has
    its own user) or as its own user (`axle`, allowed exactly this by
    /etc/sudoers.d/axle-serve). One path for both, so what the tests run is what production
    runs; `env -i` guarantees the server starts from an empty environment."""

    name: str
    python: str  # the serving environment's interpreter (it has mlflow and the models' libraries)

    @property
    def uid(self) -> int:
        try:
            return pwd.getpwnam(self.name).pw_uid
        except KeyError:
            raise ServingError(
                f"The serving user {self.name!r} does not exist; compose/local/stack.sh up creates it.",
                permanent=True,
            ) from None

    def check(self) -> None:
        if self.uid == 0 or self.uid == os.geteuid():
            raise ServingError(
                f"Model servers must not run as root or as the hub's own user ({self.name!r}).", permanent=True
            )
        if not os.access(SUDO, os.X_OK):
            raise ServingError(f"{SUDO} is missing; install the sudo package (compose/local/stack.sh up).", True)

    def argv(self, *args: str) -> list[str]:
        path = f"{Path(self.python).parent}:/usr/bin:/bin"
        return [SUDO, "-n", "-u", self.name, "--", ENV, "-i", f"PATH={path}", "LANG=C.UTF-8", self.python, "-I"] + [
            "-c",
            LAUNCHER_SOURCE,
            *args,
        ]

    def run(self, *args: str, feed=None, timeout: float = 120.0) -> dict:
        """Run a launcher command as the serving user; its one line of JSON on stdout comes
        back. `feed(stream)` writes its stdin. On failure the error carries the end of what
        the launcher (or sudo) wrote to stderr."""
        self.check()
        with tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(
                    self.argv(*args),
                    stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    cwd="/",
                    env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                    # No controlling terminal: sudo then runs the command without a pty.
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                raise ServingError(f"cannot run {SUDO}: {exc}", permanent=True) from None
            try:
                if feed is not None:
                    try:
                        feed(proc.stdin)
                    except BrokenPipeError:
                        pass  # the launcher gave up; its stderr says why
                    finally:
                        try:
                            proc.stdin.close()
                        except BrokenPipeError:
                            pass
                out = proc.stdout.read()
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise ServingError(f"the serving launcher did not finish in {timeout:g}s") from None
            finally:
                proc.stdout.close()
            err.seek(0)
            said = " | ".join(line.strip() for line in err.read()[-2000:].decode(errors="replace").splitlines())
        if code != 0:
            raise ServingError(
                f"the serving launcher failed as {self.name} (exit {code}): {said or 'no message'}",
                permanent=code in (2, 3),
            )
        try:
            return json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise ServingError("the serving launcher answered with something not JSON") from None

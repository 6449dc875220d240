"""Slots: the pool of users local model servers run as, one per running server.

Slot N is the user `<prefix>-N` (own primary group) and its folder `<server_root>/slot-N`
(that user's, setgid to the hub's group, 2750), so one server cannot read another's files,
reach or replace its socket, or signal or trace it. Every path is built here from the slot
and the server's token, never taken from what a launcher printed."""

from __future__ import annotations

import grp
import os
import stat
from pathlib import Path
from typing import Any

from apps.integrations.serving.base import ServingError

from . import launch, procs, uds


class Slots:
    def __init__(self, server_root: Path, prefix: str, pool_size: int, python: str, server_group: str = "") -> None:
        self.server_root = Path(server_root)
        self.prefix = prefix
        self.pool_size = pool_size
        self.python = python
        self.server_group = server_group

    def user(self, slot: int) -> procs.ServingUser:
        return procs.ServingUser(f"{self.prefix}-{int(slot)}", self.python)

    def root(self, slot: int) -> Path:
        return self.server_root / f"slot-{int(slot)}"

    def workdir(self, server: dict[str, Any]) -> Path:
        token = str(server["token"])
        if not token.isalnum():
            raise ServingError(f"the state names a server token {token!r} that is not one", permanent=True)
        return self.root(server["slot"]) / token

    def socket(self, server: dict[str, Any]) -> Path:
        return self.workdir(server) / "sock"

    def allocate(self, busy: set[int]) -> int:
        """The lowest slot not in `busy` (the ones the hub's state names) that no process runs
        as (a server of an earlier hub that would not stop keeps its slot)."""
        for slot in range(self.pool_size):
            if slot not in busy and not procs.runs_as(self.user(slot).uid):
                return slot
        raise ServingError(
            f"All {self.pool_size} model server users ({self.prefix}-0 to {self.prefix}-"
            f"{self.pool_size - 1}) are serving a deployment; stop one, or raise AXLE_MODEL_SERVER_POOL "
            "and run compose/local/stack.sh up to make more.",
            permanent=True,
        )

    def ready_root(self, slot: int) -> Path:
        """The slot's folder: its user's, setgid to the hub's group, closed to others (2750).
        Made here only when the hub runs as root; otherwise the stack's install step makes it
        (compose/local/stack.sh)."""
        root, uid = self.root(slot), self.user(slot).uid
        try:
            info = root.stat()
        except FileNotFoundError:
            if os.geteuid() != 0:
                raise ServingError(
                    f"{root} does not exist; compose/local/stack.sh up makes the servers' folders.", permanent=True
                ) from None
            if not self.server_root.exists():
                self.server_root.mkdir(parents=True)
                self.server_root.chmod(0o711)  # passable, not listable
            root.mkdir()
            gid = grp.getgrnam(self.server_group).gr_gid if self.server_group else os.getegid()
            os.chown(root, uid, gid)
            os.chmod(root, 0o2750)
            info = root.stat()
        if info.st_uid != uid or info.st_mode & 0o007 or not info.st_mode & stat.S_ISGID:
            raise ServingError(
                f"{root} must belong to {self.user(slot).name}, be setgid to the hub's group and closed to others "
                "(2750).",
                permanent=True,
            )
        return root

    def peer_check(self, server: dict[str, Any]) -> uds.PeerCheck:
        """What the process answering on the server's socket must be: running as the slot's
        user, and the recorded server or a worker it started (uvicorn's workers listen when
        there are several)."""
        pid, uid = int(server["pid"]), int(server["uid"])

        def check(peer_pid: int, peer_uid: int) -> bool:
            if peer_uid != uid:
                return False
            if peer_pid == pid:
                return True
            st = procs.read_stat(peer_pid)
            return st is not None and st.ppid == pid

        return check

    def log_file(self, server: dict[str, Any]) -> Path:
        """The server's own log, in its slot's folder (the hub reads it through its group)."""
        return self.root(server["slot"]) / launch.LOG_NAME

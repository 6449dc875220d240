"""A model server answers the hub only: it listens on no TCP port, and its Unix socket sits in
a folder only the serving user and the hub's group may enter. The hub's predict endpoint stays
the governed way to a model."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import NAMESPACE, SERVE_USER, hub_group, spec_for

pytestmark = [pytest.mark.mlflow, pytest.mark.slow]

CONNECT = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_UNIX)\n"
    "try:\n"
    "    s.connect(sys.argv[1]); s.sendall(b'GET /ping HTTP/1.0\\r\\n\\r\\n'); print(s.recv(12).decode())\n"
    "except OSError as exc:\n"
    "    print(type(exc).__name__)\n"
)


def as_user(user: str, *argv: str) -> str:
    out = subprocess.run(["runuser", "-u", user, "--", *argv], capture_output=True, text=True, timeout=30)
    return out.stdout.strip() or out.stderr.strip()


def listening_tcp_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                inodes.add(fields[9])
    return inodes


def socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            found.add(target[len("socket:[") : -1])
    return found


def test_only_the_hub_reaches_a_model_server(versions, backend):
    backend.apply(spec_for(versions[0], "iris"))
    backend.wait_ready("iris", NAMESPACE, timeout=180)
    server = json.loads((backend.state_dir / "iris.json").read_text())["server"]
    sock = server["socket"]

    # Another user of the host (a cluster user, say) cannot even reach the socket.
    assert as_user("nobody", sys.executable, "-I", "-c", CONNECT, sock) == "PermissionError"
    # The hub's own user can (when the host has one; root here otherwise).
    if hub_group():
        assert as_user("axle", sys.executable, "-I", "-c", CONNECT, sock).startswith("HTTP/1.")
    assert backend.predict("iris", NAMESPACE, {"inputs": [[5.1, 3.5, 1.4, 0.2]]}) == {"predictions": [0]}
    # And there is no TCP port to try instead.
    assert socket_inodes(server["pid"]) and not socket_inodes(server["pid"]) & listening_tcp_inodes()
    folder = Path(server["workdir"])
    assert (folder.stat().st_mode & 0o777, folder.owner()) == (0o750, SERVE_USER)
    assert folder.parent.stat().st_mode & 0o7777 == 0o2750


def test_the_hubs_user_may_run_only_an_emptied_environment_as_the_serving_user():
    try:
        pwd.getpwnam("axle")
    except KeyError:
        pytest.skip("the hub has no user of its own on this host (no `axle`)")
    serve_uid = str(pwd.getpwnam(SERVE_USER).pw_uid)

    assert as_user("axle", "sudo", "-n", "-u", SERVE_USER, "--", "/usr/bin/env", "-i", "/usr/bin/id", "-u") == serve_uid
    assert "password is required" in as_user("axle", "sudo", "-n", "-u", SERVE_USER, "--", "/usr/bin/id", "-u")
    assert "password is required" in as_user("axle", "sudo", "-n", "-u", "root", "--", "/usr/bin/env", "-i", "id")

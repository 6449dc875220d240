"""A model server answers the hub only: it listens on no TCP port, and its Unix socket sits in
its slot's folder, which only its own user and the hub's group may enter. Each running server
has a user of its own, so one deployment's model cannot touch another's server either. The
hub's predict endpoint stays the governed way to a model."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import textwrap
from pathlib import Path

import pytest

from apps.integrations.local_serving import procs
from apps.integrations.mlflow.client import directory_sha256
from apps.integrations.serving.base import DeploymentSpec

from .conftest import HUB_SERVE_USER, NAMESPACE, POOL, SERVE_USER, SERVING_PYTHON, hub_group, spec_for

pytestmark = [pytest.mark.mlflow, pytest.mark.slow]

# The host's own interpreter: no Django, no checkout (a clone under /root is closed to others).
PYTHON = "/usr/bin/python3"
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
        try:
            target = os.readlink(fd)
        except FileNotFoundError:  # closed between the listing and the read (a served request's)
            continue
        if target.startswith("socket:["):
            found.add(target[len("socket:[") : -1])
    return found


def test_only_the_hub_reaches_a_model_server(versions, backend):
    backend.apply(spec_for(versions[0], "iris"))
    backend.wait_ready("iris", NAMESPACE, timeout=180)
    server = json.loads((backend.state_dir / "iris.json").read_text())["server"]
    sock = server["socket"]

    # Another user of the host (a cluster user, say) cannot even reach the socket.
    assert as_user("nobody", PYTHON, "-I", "-c", CONNECT, sock) == "PermissionError"
    # The hub's own user can (when the host has one; root here otherwise).
    if hub_group():
        assert as_user("axle", PYTHON, "-I", "-c", CONNECT, sock).startswith("HTTP/1.")
    assert backend.predict("iris", NAMESPACE, {"inputs": [[5.1, 3.5, 1.4, 0.2]]}) == {"predictions": [0]}
    # And there is no TCP port to try instead.
    assert socket_inodes(server["pid"]) and not socket_inodes(server["pid"]) & listening_tcp_inodes()
    user = f"{SERVE_USER}-{server['slot']}"
    folder = Path(server["workdir"])
    assert folder == backend.server_root / f"slot-{server['slot']}" / server["token"]
    assert (folder.stat().st_mode & 0o777, folder.owner()) == (0o750, user)
    assert (folder.parent.stat().st_mode & 0o7777, folder.parent.owner()) == (0o2750, user)


# A deployment's model that goes after the other servers from its `load_context`.
HOSTILE = textwrap.dedent(
    """
    import ctypes, json, os, signal, socket, sys
    import mlflow.pyfunc


    class Hostile(mlflow.pyfunc.PythonModel):
        def load_context(self, context):
            if os.environ.get("HOSTILE_DISARMED"):
                self.report = {}
                return
            victim = json.load(open(context.artifacts["victim"]))
            report = {"uid": os.getuid()}

            def attempt(what, action):
                try:
                    action()
                    report[what] = "done"
                except OSError as exc:
                    report[what] = type(exc).__name__

            def connect():
                s = socket.socket(socket.AF_UNIX)
                s.connect(victim["socket"])

            def replace():
                os.unlink(victim["socket"])

            def listen_there():
                s = socket.socket(socket.AF_UNIX)
                s.bind(victim["socket"])
                s.listen()

            def trace():
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.ptrace(16, victim["pid"], None, None) != 0:  # PTRACE_ATTACH
                    raise OSError(ctypes.get_errno(), "ptrace")

            attempt("read_model", lambda: open(victim["model_file"], "rb").read(1))
            attempt("list_folder", lambda: os.listdir(victim["workdir"]))
            attempt("list_slot", lambda: os.listdir(victim["slot"]))
            attempt("read_log", lambda: open(victim["log"], "rb").read(1))
            attempt("read_environ", lambda: open(f"/proc/{victim['pid']}/environ", "rb").read(1))
            attempt("connect", connect)
            attempt("replace_socket", replace)
            attempt("listen_there", listen_there)
            attempt("trace", trace)
            attempt("kill", lambda: os.kill(victim["pid"], signal.SIGKILL))
            attempt("kill_group", lambda: os.killpg(victim["pid"], signal.SIGKILL))
            # And something that outlives the server unless its whole user is swept.
            import subprocess
            subprocess.Popen(["/bin/sleep", "600"], env={}, start_new_session=True, close_fds=True,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.report = report

        def predict(self, context, model_input, params=None):
            return [json.dumps(self.report)]


    victim, dest = sys.argv[1:]
    mlflow.pyfunc.save_model(dest, python_model=Hostile(), artifacts={"victim": victim})
    """
)


def test_a_second_deployments_model_cannot_touch_the_first_deployments_server(versions, backend, tmp_path):
    backend.apply(spec_for(versions[0], "iris", owner="d-vision"))
    backend.wait_ready("iris", NAMESPACE, timeout=180)
    first = json.loads((backend.state_dir / "iris.json").read_text())["server"]
    slot = Path(first["workdir"]).parent
    victim = tmp_path / "victim.json"
    victim.write_text(
        json.dumps(
            {
                "pid": first["pid"],
                "socket": first["socket"],
                "workdir": first["workdir"],
                "slot": str(slot),
                "log": str(slot / "server.log"),
                "model_file": str(Path(first["workdir"]) / "model" / "MLmodel"),
            }
        )
    )
    hostile = tmp_path / "hostile"
    made = subprocess.run(
        [str(SERVING_PYTHON), "-c", HOSTILE, str(victim), str(hostile)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HOSTILE_DISARMED": "1"},
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr[-2000:]
    spec = DeploymentSpec(
        name="hostile",
        namespace=NAMESPACE,
        model_name="hostile",
        model_version="1",
        model_uri="models:/hostile/1",
        artifact_sha256=directory_sha256(hostile),
        owner="d-audio",
        model_path=str(hostile),
    )

    backend.apply(spec)
    backend.wait_ready("hostile", NAMESPACE, timeout=180)
    report = json.loads(backend.predict("hostile", NAMESPACE, {"inputs": [[0]]})["predictions"][0])

    second = json.loads((backend.state_dir / "hostile.json").read_text())["server"]
    assert second["slot"] != first["slot"] and report["uid"] == second["uid"] != first["uid"]
    attempts = {k: v for k, v in report.items() if k != "uid"}
    assert len(attempts) == 11 and set(attempts.values()) == {"PermissionError"}, attempts
    # The first server still runs, its socket is its own, and it is what answers (the hub
    # checks the peer of each connection: the recorded pid, as the slot's user).
    assert backend.status("iris", NAMESPACE).ready
    assert Path(first["socket"]).stat().st_uid == first["uid"]
    assert backend.predict("iris", NAMESPACE, {"inputs": [[5.1, 3.5, 1.4, 0.2]]}) == {"predictions": [0]}
    # Stopping the hostile server ends everything its user runs, the tokenless sleeper too,
    # so the slot is free for the next server.
    assert procs.runs_as(second["uid"])
    backend.delete("hostile", NAMESPACE)
    assert not procs.runs_as(second["uid"])
    assert procs.is_ours(first["pid"], first["start_ticks"], first["boot_id"], first["uid"], first["socket"])


def test_the_hubs_user_may_run_only_an_emptied_environment_as_a_serving_user():
    try:
        pwd.getpwnam("axle")
    except KeyError:
        pytest.skip("the hub has no user of its own on this host (no `axle`)")

    for user in (f"{HUB_SERVE_USER}-0", f"{HUB_SERVE_USER}-{POOL - 1}"):
        uid = str(pwd.getpwnam(user).pw_uid)
        assert as_user("axle", "sudo", "-n", "-u", user, "--", "/usr/bin/env", "-i", "/usr/bin/id", "-u") == uid
        assert "password is required" in as_user("axle", "sudo", "-n", "-u", user, "--", "/usr/bin/id", "-u")
    assert "password is required" in as_user("axle", "sudo", "-n", "-u", "root", "--", "/usr/bin/env", "-i", "id")


def test_each_serving_user_has_a_group_of_its_own():
    users = [pwd.getpwnam(f"{prefix}-{i}") for prefix in (HUB_SERVE_USER, SERVE_USER) for i in range(POOL)]

    assert len({u.pw_uid for u in users}) == len({u.pw_gid for u in users}) == 2 * POOL
    assert not {u.pw_uid for u in users} & {0, os.geteuid()}

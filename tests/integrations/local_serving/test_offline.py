"""The local backend's pure parts and refusals, without MLflow or a model server."""

from __future__ import annotations

import io
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from apps.integrations.local_serving import launch, procs
from apps.integrations.local_serving.backend import LocalBackend
from apps.integrations.mlflow.client import directory_sha256
from apps.integrations.serving.base import DeploymentSpec, ServingBackend, ServingError

LAUNCHER = Path(launch.__file__)


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    return LocalBackend(
        tmp_path / "serving", "/nonexistent/bin/python", server_root=tmp_path / "servers", server_user="axle-tserve"
    )


def spec(name: str = "iris", sha256: str = "ab" * 32, owner: str = "d-1", model_path: str = "") -> DeploymentSpec:
    return DeploymentSpec(
        name=name,
        namespace="staging",
        model_name="iris",
        model_version="1",
        model_uri="models:/iris/1",
        artifact_sha256=sha256,
        owner=owner,
        model_path=model_path,
    )


def write_state(
    backend: LocalBackend, name: str, *, owner: str = "", server: dict | None = None, slot: int = 0
) -> None:
    me = procs.read_stat(os.getpid())
    server = server or {
        "slot": slot,
        "pid": os.getpid(),  # alive, but not a model server we started
        "uid": os.getuid(),
        "token": "notours",
        "boot_id": procs.boot_id(),
        "start_ticks": me.start_ticks,
        "started_at": "2026-01-01T00:00:00+00:00",
        "model_uri": "models:/iris/1",
        "artifact_sha256": "ab" * 32,
    }
    state = {"format": 3, "name": name, "namespace": "staging", "owner": owner, "retiring": [], "server": server}
    state["spec"] = {"model_name": "iris", "model_version": "1"}
    (backend.state_dir / f"{name}.json").write_text(json.dumps(state))


def test_it_implements_the_serving_backend_protocol(backend):
    assert isinstance(backend, ServingBackend)


def test_it_parses_proc_stat_even_when_the_command_name_has_spaces_and_parentheses():
    line = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 987654 1000 50"

    stat = procs.parse_stat(line)

    assert (stat.pid, stat.state, stat.ppid, stat.pgid, stat.start_ticks) == (4242, "S", 1, 4242, 987654)


@pytest.mark.parametrize("name", ["../etc", "Iris", "a/b", "", "-x", "x" * 64])
def test_it_refuses_names_that_are_not_dns_labels(backend, name):
    with pytest.raises(ServingError) as caught:
        backend.status(name, "staging")
    assert caught.value.permanent


def test_it_refuses_a_spec_without_an_artifact_sha256(backend):
    with pytest.raises(ServingError, match="sha256") as caught:
        backend.apply(spec(sha256=""))
    assert caught.value.permanent


def test_what_does_not_exist_is_not_deployed_and_deleting_it_is_fine(backend):
    assert backend.status("iris", "staging").exists is False
    backend.delete("iris", "staging")
    assert backend.list_names("staging") == []
    with pytest.raises(ServingError) as caught:
        backend.predict("iris", "staging", {"inputs": [[1]]})
    assert caught.value.permanent


def test_the_launcher_runs_on_the_standard_library_until_it_needs_mlflow():
    # It runs in the serving environment, which has mlflow but not Axle.
    result = subprocess.run(
        [sys.executable, "-I", "-c", f"import runpy; runpy.run_path({str(LAUNCHER)!r}, run_name='x')"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


def test_it_parses_an_environment_block():
    assert procs.parse_environ(b"A=1\0B=x=y\0junk\0") == {"A": "1", "B": "x=y"}


def test_only_a_process_of_the_serving_user_with_its_socket_in_the_command_line_is_a_server():
    me = procs.read_stat(os.getpid())
    needle = Path(sys.argv[0]).name  # something our own command line holds

    assert procs.is_ours(os.getpid(), me.start_ticks, procs.boot_id(), os.getuid(), needle)
    # Another user's process (the serving user is never the hub's), a reused pid, a stranger.
    assert not procs.is_ours(os.getpid(), me.start_ticks, procs.boot_id(), os.getuid() + 1, needle)
    assert not procs.is_ours(os.getpid(), me.start_ticks + 1, procs.boot_id(), os.getuid(), needle)
    assert not procs.is_ours(os.getpid(), me.start_ticks, procs.boot_id(), os.getuid(), "/srv/other/sock")


def test_a_state_file_pointing_at_a_stranger_reports_not_running_and_delete_spares_it(backend):
    write_state(backend, "iris")

    status = backend.status("iris", "staging")
    backend.delete("iris", "staging")  # would have killed this test run if it trusted the pid

    assert status.exists and not status.ready and "not running" in status.message
    assert backend.list_names("staging") == []


def test_it_refuses_to_replace_a_server_of_another_deployment(backend, tmp_path):
    write_state(backend, "digits-staging-0123456789", owner="deployment-of-vision")
    before = (backend.state_dir / "digits-staging-0123456789.json").read_text()

    with pytest.raises(ServingError, match="another deployment") as caught:
        backend.apply(spec("digits-staging-0123456789", owner="deployment-of-audio", model_path=str(tmp_path)))

    assert caught.value.permanent
    assert (backend.state_dir / "digits-staging-0123456789.json").read_text() == before
    assert backend.owner_of("digits-staging-0123456789", "staging") == "deployment-of-vision"


def test_it_refuses_a_spec_without_a_checked_local_copy_of_the_model(backend):
    with pytest.raises(ServingError, match="no local copy") as caught:
        backend.apply(spec())
    assert caught.value.permanent


def test_a_copy_that_is_not_the_approved_artifact_is_refused_before_anything_starts(backend, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "MLmodel").write_text("flavors: {}\n")

    with pytest.raises(ServingError, match="refusing to serve") as caught:
        backend.apply(spec(sha256="0" * 64, model_path=str(model)))

    assert caught.value.permanent
    assert backend.list_names("staging") == [] and not backend.server_root.exists()


def test_model_servers_never_run_as_the_hubs_own_user():
    me = pwd.getpwuid(os.geteuid()).pw_name  # root here, the hub's user (axle) in production

    with pytest.raises(ServingError, match="must not run as root") as caught:
        procs.ServingUser(me, sys.executable).check()

    assert caught.value.permanent


def test_a_slot_folder_open_to_other_users_is_refused(tmp_path):
    uid = pwd.getpwnam("axle-tserve-0").pw_uid
    root = tmp_path / "servers"
    (root / "slot-0").mkdir(parents=True)
    os.chown(root / "slot-0", uid, 0)
    (root / "slot-0").chmod(0o755)
    model = tmp_path / "model"
    model.mkdir()
    (model / "MLmodel").write_text("flavors: {}\n")
    backend = LocalBackend(tmp_path / "serving", sys.executable, server_root=root, server_user="axle-tserve")

    with pytest.raises(ServingError, match="slot-0 must belong to axle-tserve-0.*closed to others") as caught:
        backend.apply(spec(sha256=directory_sha256(model), model_path=str(model)))

    assert caught.value.permanent


def test_a_model_travels_to_the_server_file_for_file_and_hashes_the_same(tmp_path):
    model = tmp_path / "model"
    (model / "artifacts" / "nested" / "deeper").mkdir(parents=True)
    (model / "MLmodel").write_text("flavors: {}\n")
    (model / "python_model.pkl").write_bytes(bytes(range(256)) * 5000)
    (model / "artifacts" / "nested" / "deeper" / "w.bin").write_bytes(b"\x00\x01")
    (model / "artifacts" / "empty.txt").write_bytes(b"")
    # A file a models:/ download used to add, which the old launcher left out of its hash.
    (model / "registered_model_meta").write_text("model_name: iris\n")
    stream = io.BytesIO()

    launch.pack(model, stream)
    stream.seek(0)
    copy = tmp_path / "copy"
    copy.mkdir()
    count = launch.unpack(stream, copy)

    assert count == 5
    assert directory_sha256(copy) == directory_sha256(model)


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", "a//b", "a/./b", "a/../../b", ""])
def test_the_launcher_refuses_file_names_that_leave_the_model_folder(tmp_path, name):
    stream = io.BytesIO(json.dumps({"path": name, "size": 1}).encode() + b"\nx" + b'{"end": 1}\n')

    with pytest.raises(ValueError, match="refusing"):
        launch.unpack(stream, tmp_path)

    assert list(tmp_path.iterdir()) == []


def test_a_damaged_state_file_does_not_hide_the_others(backend):
    (backend.state_dir / "broken.json").write_text("{not json")
    write_state(backend, "iris")

    assert backend.list_names("staging") == ["iris"]
    with pytest.raises(ServingError):
        backend.status("broken", "staging")
    assert backend.stop_all() == ["iris"]


def test_the_launcher_stops_only_processes_carrying_its_token():
    env = {**os.environ, launch.MARKER: "t0ken"}
    child = subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while launch.members("t0ken") != [child.pid] and time.monotonic() < deadline:
            time.sleep(0.01)

        assert launch.terminate("t0ken", grace=5)

        child.wait(timeout=5)
        assert stranger.poll() is None
    finally:
        child.kill()
        stranger.kill()


def test_a_serving_environment_without_the_server_fails_with_its_log(tmp_path):
    """/usr/bin/python3 has no uvicorn: the server dies on start, and says why in its own
    log, in its slot's folder."""
    pwd.getpwnam("axle-tserve-0")  # made by compose/local/stack.sh up
    model = tmp_path / "model"
    model.mkdir()
    (model / "MLmodel").write_text("flavors: {}\n")
    root = Path("/var/lib/axle/serving") / f"pytest-{os.getpid()}-{time.monotonic_ns()}"
    backend = LocalBackend(tmp_path / "serving", "/usr/bin/python3", server_root=root, server_user="axle-tserve")
    try:
        backend.apply(spec(sha256=directory_sha256(model), model_path=str(model)))
        with pytest.raises(ServingError) as caught:
            backend.wait_ready("iris", "staging", timeout=30)
        assert "exited" in caught.value.message and "No module named uvicorn" in caught.value.message
        log = root / "slot-0" / launch.LOG_NAME
        assert log.stat().st_uid == pwd.getpwnam("axle-tserve-0").pw_uid and log.stat().st_mode & 0o777 == 0o640
        assert not (tmp_path / "serving" / "iris.log").exists()  # nothing of the server's in the hub's folder
        backend.delete("iris", "staging")
        # Nothing left behind but the log, which the slot's next server clears.
        assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == ["slot-0", "slot-0/server.log"]
        assert backend.list_names("staging") == []
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_full_pool_is_refused_with_a_clear_message_and_a_stopped_server_frees_its_slot(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "MLmodel").write_text("flavors: {}\n")
    backend = LocalBackend(
        tmp_path / "serving",
        "/nonexistent/bin/python",
        server_root=tmp_path / "servers",
        server_user="axle-tserve",
        pool_size=2,
    )
    write_state(backend, "digits", slot=0)
    write_state(backend, "iris", slot=1)

    with pytest.raises(ServingError, match=r"All 2 model server users \(axle-tserve-0 to axle-tserve-1\)") as caught:
        backend.apply(spec("audio", sha256=directory_sha256(model), model_path=str(model)))
    assert caught.value.permanent
    backend.delete("digits", "staging")

    assert backend._allocate() == 0


def test_a_socket_answered_by_another_process_gets_no_request(tmp_path):
    """The socket path is the hub's own (slot folder + token), and the process listening
    there must be the recorded server: an impostor on that path receives nothing."""
    backend = LocalBackend(
        tmp_path / "serving", sys.executable, server_root=tmp_path / "servers", server_user="axle-tserve"
    )
    folder = backend.server_root / "slot-0" / "t0ken"
    folder.mkdir(parents=True)
    sock_path = folder / "sock"
    # The recorded server: a live process of ours with the socket in its command line.
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(sock_path)])
    impostor = socket.socket(socket.AF_UNIX)
    impostor.bind(str(sock_path))
    impostor.listen()
    received = []

    def answer():
        conn, _ = impostor.accept()
        conn.settimeout(2)
        try:
            received.append(conn.recv(4096))
        except OSError:
            received.append(b"")
        try:
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 29\r\n\r\n" + b'{"predictions": ["impostor"]}')
        except OSError:
            pass  # the hub hung up on it
        conn.close()

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        while procs.read_cmdline(server.pid).count(str(sock_path).encode()) == 0:
            time.sleep(0.01)
        stat = procs.read_stat(server.pid)
        write_state(
            backend,
            "iris",
            server={
                "slot": 0,
                "pid": server.pid,
                "uid": os.getuid(),
                "token": "t0ken",
                "boot_id": procs.boot_id(),
                "start_ticks": stat.start_ticks,
                "started_at": "2026-01-01T00:00:00+00:00",
                "model_uri": "models:/iris/1",
                "artifact_sha256": "ab" * 32,
            },
        )

        with pytest.raises(ServingError, match=rf"answered by pid {os.getpid()}.*not by the model server"):
            backend.predict("iris", "staging", {"inputs": [[1]]})
        thread.join(timeout=5)

        assert received == [b""]  # the connection was closed before a byte was sent
        assert not backend.status("iris", "staging").ready
    finally:
        server.kill()
        impostor.close()


def test_a_servers_log_is_capped_with_one_older_copy(tmp_path):
    readable, writable = os.pipe()
    log = tmp_path / "server.log"
    keeper = threading.Thread(target=launch.pump, args=(readable, log, 1000))
    keeper.start()
    for i in range(100):
        os.write(writable, f"line {i:04d} of a chatty model\n".encode())
    os.close(writable)
    keeper.join(timeout=10)
    os.close(readable)

    older = Path(f"{log}.1")
    assert log.stat().st_size <= 1000 and older.stat().st_size <= 1000
    assert log.read_text().splitlines()[-1] == "line 0099 of a chatty model"
    assert sorted(tmp_path.iterdir()) == [log, older]

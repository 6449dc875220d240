"""The local backend's pure parts and refusals, without MLflow or a model server."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apps.integrations.local_serving import procs
from apps.integrations.local_serving.backend import LAUNCHER, LocalBackend
from apps.integrations.mlflow.client import directory_sha256
from apps.integrations.serving.base import DeploymentSpec, ServingBackend, ServingError


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    return LocalBackend(tmp_path / "serving", "/nonexistent/bin/mlflow", tracking_uri="http://u:secret@127.0.0.1:9")


def spec(name: str = "iris", sha256: str = "ab" * 32) -> DeploymentSpec:
    return DeploymentSpec(
        name=name,
        namespace="staging",
        model_name="iris",
        model_version="1",
        model_uri="models:/iris/1",
        artifact_sha256=sha256,
    )


def test_it_implements_the_serving_backend_protocol(backend):
    assert isinstance(backend, ServingBackend)


def test_it_parses_proc_stat_even_when_the_command_name_has_spaces_and_parentheses():
    line = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 987654 1000 50"

    stat = procs.parse_stat(line)

    assert (stat.pid, stat.state, stat.ppid, stat.pgid, stat.start_ticks) == (4242, "S", 1, 4242, 987654)


def test_it_parses_an_environment_block():
    assert procs.parse_environ(b"A=1\0B=x=y\0junk\0") == {"A": "1", "B": "x=y"}


def test_a_reused_pid_is_not_taken_for_our_server():
    me = procs.read_stat(os.getpid())
    assert me is not None

    # Right pid and start time, but no marker in its environment: someone else's process.
    assert not procs.is_ours(os.getpid(), me.start_ticks, procs.boot_id(), "token")
    # Right pid, another start time: the number was handed to a new process.
    assert not procs.is_ours(os.getpid(), me.start_ticks + 1, procs.boot_id(), "token")


def test_a_marked_process_is_ours_and_is_terminated_with_its_group():
    env = {**os.environ, procs.MARKER: "t0ken"}
    child = subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)
    try:
        # Until it has exec'd, the child still shows our environment, without the marker.
        deadline = time.monotonic() + 5
        while procs.read_marker(child.pid) != "t0ken" and time.monotonic() < deadline:
            time.sleep(0.01)
        stat = procs.read_stat(child.pid)
        assert stat is not None
        assert procs.is_ours(child.pid, stat.start_ticks, procs.boot_id(), "t0ken")

        assert procs.terminate("t0ken", child.pid, grace=5)

        # terminate() reaps its own children, so the exit status is gone: ask /proc instead.
        assert procs.read_stat(child.pid) is None
        assert not procs.is_ours(child.pid, stat.start_ticks, procs.boot_id(), "t0ken")
    finally:
        child.kill()


def test_a_state_file_pointing_at_a_stranger_reports_not_running_and_delete_spares_it(backend):
    me = procs.read_stat(os.getpid())
    state = {
        "format": 1,
        "name": "iris",
        "namespace": "staging",
        "spec": {"model_name": "iris", "model_version": "1"},
        "retiring": [],
        "server": {
            "pid": os.getpid(),  # alive, but not a model server we started
            "port": 5100,
            "token": "not-in-our-environment",
            "boot_id": procs.boot_id(),
            "start_ticks": me.start_ticks,
            "started_at": "2026-01-01T00:00:00+00:00",
            "workdir": "",
            "model_uri": "models:/iris/1",
            "artifact_sha256": "ab" * 32,
        },
    }
    (backend.state_dir / "iris.json").write_text(json.dumps(state))

    status = backend.status("iris", "staging")
    backend.delete("iris", "staging")  # would have killed this test run if it trusted the pid

    assert status.exists and not status.ready and "not running" in status.message
    assert backend.list_names("staging") == []


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


def test_a_server_that_exits_at_once_fails_wait_ready_with_its_log(tmp_path: Path):
    # A "serving environment" whose Python has no mlflow: the launcher dies on import.
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to("/usr/bin/python3")
    broken = LocalBackend(tmp_path / "serving", str(bin_dir / "mlflow"), tracking_uri="http://u:secret@127.0.0.1:9")
    try:
        broken.apply(spec())
        with pytest.raises(ServingError) as caught:
            broken.wait_ready("iris", "staging", timeout=30)
    finally:
        broken.stop_all()

    assert "exited" in caught.value.message and "mlflow" in caught.value.message
    assert not caught.value.permanent
    assert "secret" not in "".join(p.read_text() for p in broken.state_dir.glob("*.json"))


def test_credentials_in_the_servers_log_are_not_repeated_in_status(backend):
    me = procs.read_stat(os.getpid())
    server = {"pid": os.getpid(), "port": 5100, "token": "x", "boot_id": "", "start_ticks": me.start_ticks}
    state = {"format": 1, "name": "iris", "namespace": "staging", "retiring": [], "server": server}
    state["spec"] = {"model_name": "iris", "model_version": "1"}
    (backend.state_dir / "iris.json").write_text(json.dumps(state))
    (backend.state_dir / "iris.log").write_text("ConnectionError: http://user:hunter2@mlflow.example/api failed\n")

    message = backend.status("iris", "staging").message

    assert "hunter2" not in message and "mlflow.example" in message


def test_the_launcher_hashes_a_model_like_the_registry(tmp_path: Path):
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "MLmodel").write_text("flavors: {}\n")
    (model / "sub" / "w.bin").write_bytes(b"\x00\x01")
    expected = directory_sha256(model)
    # What a models:/<name>/<version> download adds is not part of the logged artifact.
    (model / "registered_model_meta").write_text("model_name: iris\nmodel_version: '1'\n")

    loaded = importlib.util.spec_from_file_location("axle_launch", LAUNCHER)
    launch = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(launch)

    assert launch.directory_sha256(model) == expected


def test_the_launcher_runs_on_the_standard_library_until_it_needs_mlflow():
    # It runs in the serving environment, which has mlflow but not Axle.
    result = subprocess.run(
        [sys.executable, "-I", "-c", f"import runpy; runpy.run_path({str(LAUNCHER)!r}, run_name='x')"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


def test_a_damaged_state_file_does_not_hide_the_others(backend):
    (backend.state_dir / "broken.json").write_text("{not json")
    me = procs.read_stat(os.getpid())
    server = {"pid": os.getpid(), "port": 5100, "token": "x", "boot_id": "", "start_ticks": me.start_ticks}
    state = {"format": 1, "name": "iris", "namespace": "staging", "retiring": [], "server": server, "spec": {}}
    (backend.state_dir / "iris.json").write_text(json.dumps(state))

    assert backend.list_names("staging") == ["iris"]
    with pytest.raises(ServingError):
        backend.status("broken", "staging")
    assert backend.stop_all() == ["iris"]

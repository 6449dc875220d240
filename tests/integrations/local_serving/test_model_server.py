"""The local backend against the real thing: MLflow's model server, serving versions of a
model registered on the compose/local MLflow server."""

from __future__ import annotations

import json
import os
import pwd
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from apps.integrations.local_serving import launch, procs
from apps.integrations.local_serving.backend import LocalBackend
from apps.integrations.serving.base import ServingError

from .conftest import NAMESPACE, ROOT, SERVE_USER, Version, make_backend, spec_for

pytestmark = [pytest.mark.mlflow, pytest.mark.slow]

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def state_of(backend: LocalBackend, name: str) -> dict:
    return json.loads((backend.state_dir / f"{name}.json").read_text())


def servers_of(backend: LocalBackend) -> list[int]:
    """Pids of live model server processes started under this backend's server folder."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                env = procs.parse_environ((entry / "environ").read_bytes())
                stat = procs.read_stat(int(entry.name))
            except OSError:
                continue
            workdir = str(backend.server_root)
            if procs.MARKER in env and env.get("TMPDIR", "").startswith(workdir) and stat and stat.state != "Z":
                # One server is a process group: count its leaders only.
                if stat.pgid == stat.pid:
                    found.append(stat.pid)
    return found


@pytest.fixture(scope="module")
def served(versions: list[Version], server_root, tmp_path_factory) -> Iterator[tuple[LocalBackend, str, float]]:
    """Version 1 live under `iris`, and how long it took from apply to ready."""
    backend = make_backend(tmp_path_factory.mktemp("shared") / "serving", server_root / "shared")
    try:
        started = time.monotonic()
        backend.apply(spec_for(versions[0], "iris"))
        backend.wait_ready("iris", NAMESPACE, timeout=180)
        yield backend, "iris", time.monotonic() - started
    finally:
        backend.stop_all()


def test_it_serves_a_registered_version_and_answers_predictions(served):
    backend, name, _ = served

    status = backend.status(name, NAMESPACE)
    assert status.ready and status.url == f"unix:{state_of(backend, name)['server']['socket']}"
    server = state_of(backend, name)["server"]
    assert procs.read_uid(server["pid"]) == pwd.getpwnam(f"{SERVE_USER}-{server['slot']}").pw_uid
    by_inputs = backend.predict(name, NAMESPACE, {"inputs": ROWS})
    by_frame = backend.predict(name, NAMESPACE, {"dataframe_split": {"columns": COLUMNS, "data": ROWS}})

    assert by_inputs == {"predictions": [0, 2]}
    assert by_frame == by_inputs


def test_bad_input_is_a_permanent_error_with_the_servers_message(served):
    backend, name, _ = served

    with pytest.raises(ServingError) as caught:
        backend.predict(name, NAMESPACE, {"inputs": [["not", "a", "number", "!"]]})

    assert caught.value.permanent
    assert "could not convert string to float" in caught.value.message


def test_applying_the_same_spec_again_keeps_the_same_process(served, versions):
    backend, name, _ = served
    pid = state_of(backend, name)["server"]["pid"]

    again = backend.apply(spec_for(versions[0], name))

    assert again.ready
    assert state_of(backend, name)["server"]["pid"] == pid
    assert servers_of(backend) == [pid]


def test_a_new_backend_on_the_same_directory_adopts_the_running_server(served, versions):
    backend, name, _ = served
    pid = state_of(backend, name)["server"]["pid"]

    restarted = make_backend(backend.state_dir, backend.server_root)
    restarted.apply(spec_for(versions[0], name))

    assert restarted.status(name, NAMESPACE).ready
    assert state_of(backend, name)["server"]["pid"] == pid
    assert restarted.list_names(NAMESPACE) == [name]
    assert restarted.list_names("production") == []
    assert restarted.predict(name, NAMESPACE, {"inputs": ROWS[:1]}) == {"predictions": [0]}


def test_figures_apply_to_ready_and_predict_latency(served, capsys):
    backend, name, apply_to_ready = served
    latencies = []
    for _ in range(50):
        started = time.perf_counter()
        backend.predict(name, NAMESPACE, {"inputs": ROWS})
        latencies.append(time.perf_counter() - started)
    p50 = statistics.median(latencies) * 1000
    p95 = statistics.quantiles(latencies, n=20)[-1] * 1000
    with capsys.disabled():
        print(
            f"\n[local serving] apply to ready {apply_to_ready:.1f}s; "
            f"predict over 50 calls p50 {p50:.1f}ms p95 {p95:.1f}ms"
        )
    assert p50 < 1000


def test_a_server_outlives_the_worker_that_started_it(versions, backend):
    # A worker process applies and exits, as a worker does when it is restarted.
    code = (
        "import sys, pickle; from pathlib import Path\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from tests.integrations.local_serving.conftest import make_backend, spec_for\n"
        "spec = pickle.loads(sys.stdin.buffer.read())\n"
        f"make_backend(Path({str(backend.state_dir)!r}), Path({str(backend.server_root)!r})).apply(spec)\n"
    )
    import pickle

    subprocess.run(
        [sys.executable, "-c", code], input=pickle.dumps(spec_for(versions[0], "orphan")), check=True, timeout=60
    )

    status = backend.wait_ready("orphan", NAMESPACE, timeout=180)

    assert status.ready
    assert servers_of(backend) == [state_of(backend, "orphan")["server"]["pid"]]


def test_a_new_version_replaces_the_server_and_leaves_exactly_one(versions, backend):
    backend.apply(spec_for(versions[0], "iris"))
    backend.wait_ready("iris", NAMESPACE, timeout=180)
    old = state_of(backend, "iris")["server"]

    backend.apply(spec_for(versions[1], "iris"))
    # The old version keeps answering while the new one loads.
    assert backend.predict("iris", NAMESPACE, {"inputs": ROWS}) == {"predictions": [0, 2]}
    assert len(servers_of(backend)) == 2
    status = backend.wait_ready("iris", NAMESPACE, timeout=180)

    new = state_of(backend, "iris")["server"]
    assert status.ready and "version 2" in status.message
    assert new["pid"] != old["pid"] and new["socket"] != old["socket"]
    # During the handover both ran, each as the user of its own slot.
    assert new["slot"] != old["slot"] and new["uid"] != old["uid"]
    assert servers_of(backend) == [new["pid"]]
    assert not launch.members(old["token"])
    assert state_of(backend, "iris")["retiring"] == []
    assert state_of(backend, "iris")["spec"]["model_version"] == "2"


def test_a_server_killed_behind_its_back_reports_not_ready_and_apply_restarts_it(versions, backend):
    backend.apply(spec_for(versions[0], "iris"))
    backend.wait_ready("iris", NAMESPACE, timeout=180)
    killed = state_of(backend, "iris")["server"]["pid"]

    os.killpg(killed, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while backend.status("iris", NAMESPACE).ready and time.monotonic() < deadline:
        time.sleep(0.1)
    status = backend.status("iris", NAMESPACE)
    assert status.exists and not status.ready
    assert "not running" in status.message

    backend.apply(spec_for(versions[0], "iris"))
    backend.wait_ready("iris", NAMESPACE, timeout=180)

    assert state_of(backend, "iris")["server"]["pid"] != killed
    assert backend.predict("iris", NAMESPACE, {"inputs": ROWS}) == {"predictions": [0, 2]}
    assert len(servers_of(backend)) == 1


def test_delete_stops_the_server_and_removes_its_folder(versions, backend):
    backend.apply(spec_for(versions[0], "iris"))
    backend.wait_ready("iris", NAMESPACE, timeout=180)
    server = state_of(backend, "iris")["server"]

    backend.delete("iris", NAMESPACE)
    backend.delete("iris", NAMESPACE)  # again: nothing to do, no error

    assert not launch.members(server["token"])
    assert not Path(server["socket"]).exists()
    assert backend.status("iris", NAMESPACE).exists is False
    assert backend.list_names(NAMESPACE) == []
    assert not Path(server["workdir"]).exists()


def test_an_artifact_that_is_not_the_approved_one_is_refused(versions, backend):
    with pytest.raises(ServingError) as caught:
        backend.apply(spec_for(versions[0], "iris", sha256="0" * 64))

    assert caught.value.permanent
    assert "refusing to serve" in caught.value.message and "sha256" in caught.value.message
    assert servers_of(backend) == []

"""The tracking client against the real MLflow server of compose/local."""

from __future__ import annotations

import math
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from apps.integrations.mlflow import auth
from apps.integrations.mlflow.base import MetricPoint, MlflowError
from apps.integrations.mlflow.client import TrackingClient, directory_sha256

from .conftest import run_training

pytestmark = pytest.mark.mlflow


def test_ensure_experiment_is_idempotent_and_survives_a_race(client: TrackingClient):
    name = f"axle-race-{uuid.uuid4().hex[:8]}"
    ids: list[str] = []
    errors: list[Exception] = []

    def ensure() -> None:
        try:
            ids.append(TrackingClient(client.base_url).ensure_experiment(name))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ensure) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert not errors
    assert len(set(ids)) == 1 and client.ensure_experiment(name) == ids[0]


def test_a_run_keeps_what_the_hub_logs(client: TrackingClient, run_id: str):
    client.log_params(run_id, {"lr": "0.01", "epochs": "3"})
    client.set_tags(run_id, {"axle.job_id": "42", "slurm.nodes": "node1"})
    client.terminate(run_id, "FAILED")

    run = client.get_run(run_id)

    assert run.params == {"lr": "0.01", "epochs": "3"}
    assert run.tags["axle.job_id"] == "42" and run.tags["axle.test"] == "1"
    assert run.status == "FAILED" and run.end_time is not None


def test_it_logs_ten_thousand_points_in_ten_calls(client: TrackingClient, run_id: str):
    now = int(time.time() * 1000)
    points = [MetricPoint(f"m{k}", step / 1000, now + step, step) for k in range(10) for step in range(1000)]
    before = client.calls

    assert client.log_metrics(run_id, points) == 10
    assert client.calls - before == 10

    history = client.metric_history(run_id, ["m0", "m9"])
    assert [p.step for p in history["m9"]] == list(range(1000))
    assert history["m0"][500] == MetricPoint("m0", 0.5, now + 500, 500)
    assert client.get_run(run_id).metrics["m3"].step == 999


def test_metric_history_stops_at_its_bound(client: TrackingClient, run_id: str):
    client.log_metrics(run_id, [MetricPoint("x", float(i), 1000 + i, i) for i in range(50)])
    assert len(client.metric_history(run_id, ["x"], max_points=20)["x"]) == 20


def test_nan_and_infinity_are_accepted_as_mlflow_stores_them(client: TrackingClient, run_id: str):
    client.log_metrics(run_id, [MetricPoint("x", float("nan"), 1, 0), MetricPoint("x", float("inf"), 2, 1)])
    points = client.metric_history(run_id, ["x"])["x"]
    # MLflow's SQL store keeps NaN but clamps infinity to the largest float.
    assert math.isnan(points[0].value) and points[1].value == sys.float_info.max


def test_a_missing_run_is_a_permanent_error(client: TrackingClient):
    with pytest.raises(MlflowError) as caught:
        client.get_run("0" * 32)
    assert caught.value.permanent and caught.value.code == "RESOURCE_DOES_NOT_EXIST"


def test_artifacts_go_up_and_come_back(client: TrackingClient, run_id: str, tmp_path: Path):
    src = tmp_path / "src"
    (src / "plots").mkdir(parents=True)
    (src / "report.txt").write_text("accuracy 0.97\n")
    (src / "plots" / "loss.csv").write_text("0,1.0\n1,0.5\n")

    assert client.log_artifacts(run_id, src, "outputs") == 2

    assert [(e.path, e.is_dir) for e in client.list_artifacts(run_id, "outputs")] == [
        ("outputs/plots", True),
        ("outputs/report.txt", False),
    ]
    one = client.download_artifact(run_id, "outputs/report.txt", tmp_path / "one")
    assert Path(one).read_text() == "accuracy 0.97\n"
    folder = client.download_artifact(run_id, "outputs", tmp_path / "all")
    assert directory_sha256(folder) == directory_sha256(src)
    assert client.find_logged_model(run_id) is None


@pytest.mark.slow
def test_a_model_logged_by_mlflow_3_is_found_hashed_and_registered(
    client: TrackingClient, run_id: str, experiment_id: str, compute_python: Path, tmp_path: Path
):
    # The compute nodes reach the hub: the job logs straight to the server, with its own login.
    env = {"MLFLOW_TRACKING_URI": client.base_url, "MLFLOW_RUN_ID": run_id, "MLFLOW_EXPERIMENT_ID": experiment_id}
    job_user = f"axle-job-test-{uuid.uuid4().hex[:8]}"
    login = auth.user_with_experiment(client, job_user, experiment_id)
    try:
        out = run_training(compute_python, {**env, **(login.environment() if login else {})}, tmp_path).stdout
    finally:
        auth.user_delete(client, job_user)
    model_id = out.split("MODEL models:/", 1)[1].split()[0]

    uri = client.find_logged_model(run_id)

    assert uri == f"models:/{model_id}"
    assert client.list_artifacts(run_id) == []  # MLflow 3 keeps the model out of the run's artifacts
    assert "MLmodel" in {e.path for e in client.list_artifacts(uri)}
    digest = client.model_sha256(uri)
    assert digest == client.model_sha256(uri)
    local = client.download_artifact(uri, "", tmp_path / "copy")
    assert directory_sha256(local) == digest

    name = f"axle-test-{uuid.uuid4().hex[:8]}"
    first = client.register_model(name, uri, run_id)
    second = client.register_model(name, uri, run_id)
    assert (first.version, second.version) == ("1", "2")
    assert first.run_id == run_id and first.source == uri and first.status == "READY"
    assert client.logged_model(model_id)["source_run_id"] == run_id
    assert [v.version for v in client.search_model_versions(name, run_id)] == ["1", "2"]
    assert client.search_model_versions(name, "0" * 32) == []
    assert client.artifact_uri(uri) == client.logged_model(model_id)["artifact_uri"]

"""The file-store spool end to end: the hub bootstraps a run, the compute Python logs to
the spool with plain mlflow, the hub reads it incrementally and imports it."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from apps.integrations.mlflow import filestore
from apps.integrations.mlflow.client import TrackingClient, directory_sha256

from .conftest import bootstrap, local_list, local_read, run_training

HUB_EXPERIMENT = "7"
HUB_RUN = "0123456789abcdef0123456789abcdef"


@pytest.mark.slow
def test_the_job_resumes_the_hub_s_run_in_the_spool(compute_python: Path, spool: Path, tmp_path: Path):
    env = bootstrap(spool, HUB_EXPERIMENT, HUB_RUN, "axle-job-42")

    out = run_training(compute_python, env, tmp_path).stdout

    assert f"RUN {HUB_RUN} {HUB_EXPERIMENT}" in out
    assert sorted(p.name for p in (spool / HUB_EXPERIMENT).iterdir() if p.name != "meta.yaml") == [HUB_RUN, "models"]
    run_path = str(spool / HUB_EXPERIMENT / HUB_RUN)
    inc = filestore.read_increment(run_path=run_path, read=local_read, list_files=local_list, state=None, final=True)
    assert inc.params == {"C": "0.5", "max_iter": "300"}
    assert inc.tags == {"stage": "probe"}
    assert sorted({(p.key, p.step) for p in inc.points}) == sorted(
        [("loss", s) for s in range(5)] + [("train/acc", s) for s in range(5)]
    )
    assert not inc.malformed

    models = filestore.find_models(
        mlruns_dir=str(spool), experiment_id=HUB_EXPERIMENT, run_id=HUB_RUN, list_files=local_list, read=local_read
    )
    assert [m.name for m in models] == ["model"] and models[0].model_id.startswith("m-")
    assert (Path(models[0].artifact_dir) / "MLmodel").is_file()


@pytest.mark.slow
def test_the_job_fails_loudly_without_the_file_store_switch(compute_python: Path, spool: Path, tmp_path: Path):
    env = bootstrap(spool, HUB_EXPERIMENT, HUB_RUN)
    del env["MLFLOW_ALLOW_FILE_STORE"]
    script = tmp_path / "s.py"
    script.write_text("import mlflow\nmlflow.start_run()\n")
    result = subprocess.run(
        [str(compute_python), str(script)], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True
    )
    assert result.returncode != 0 and "MLFLOW_ALLOW_FILE_STORE" in result.stderr


@pytest.mark.slow
def test_the_reader_follows_a_job_that_is_still_logging(compute_python: Path, spool: Path, tmp_path: Path):
    env = bootstrap(spool, HUB_EXPERIMENT, HUB_RUN)
    script = textwrap.dedent(
        """
        import sys, mlflow
        with mlflow.start_run():
            for step in range(400):
                mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
                if step == 200:
                    print("HALF", flush=True)
                    sys.stdin.readline()
        """
    )
    (tmp_path / "slow.py").write_text(script)
    proc = subprocess.Popen(
        [str(compute_python), str(tmp_path / "slow.py")],
        env={"PATH": "/usr/bin:/bin", **env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "HALF"
        run_path = str(spool / HUB_EXPERIMENT / HUB_RUN)
        first = filestore.read_increment(run_path=run_path, read=local_read, list_files=local_list, state=None)
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    second = filestore.read_increment(
        run_path=run_path, read=local_read, list_files=local_list, state=first.state, final=True
    )

    assert [p.step for p in first.points] == list(range(201))
    assert [p.step for p in second.points] == list(range(201, 400))


@pytest.mark.mlflow
@pytest.mark.slow
def test_a_spooled_run_lands_in_the_hub_s_run(
    client: TrackingClient, experiment_id: str, compute_python: Path, spool: Path, tmp_path: Path
):
    run_id = client.create_run(experiment_id, "axle-spool-test")
    client.log_params(run_id, {"C": "0.5", "submitted_by": "alice"})  # the hub's own record
    env = bootstrap(spool, experiment_id, run_id, "axle-spool-test")
    run_training(compute_python, env, tmp_path, steps=30)
    run_path = str(spool / experiment_id / run_id)

    inc = filestore.read_increment(run_path=run_path, read=local_read, list_files=local_list, state=None, final=True)
    result = filestore.import_into(client, run_id, inc.points, inc.params, inc.tags)
    again = filestore.import_into(client, run_id, inc.points, inc.params, inc.tags)  # a retried task

    assert result.calls == 1 and result.conflicts == {} and again.conflicts == {}
    history = client.metric_history(run_id, ["loss", "train/acc"])
    assert [p.step for p in history["loss"]] == list(range(30))
    assert history["train/acc"][-1].value == pytest.approx(0.5 + 29 / 60)
    run = client.get_run(run_id)
    assert run.params == {"C": "0.5", "max_iter": "300", "submitted_by": "alice"}
    assert run.tags["stage"] == "probe" and run.tags["mlflow.runName"] == "axle-spool-test"

    # The model directory comes over the transport, then into the hub's run.
    (model,) = filestore.find_models(
        mlruns_dir=str(spool), experiment_id=experiment_id, run_id=run_id, list_files=local_list, read=local_read
    )
    fetched = tmp_path / "fetched"
    shutil.copytree(model.artifact_dir, fetched)
    client.log_artifacts(run_id, fetched, "model")
    uri = client.find_logged_model(run_id)
    assert uri == f"runs:/{run_id}/model"
    assert client.model_sha256(uri) == directory_sha256(model.artifact_dir)
    version = client.register_model(f"axle-spool-{run_id[:8]}", uri, run_id)
    assert version.version == "1" and version.run_id == run_id


@pytest.mark.mlflow
def test_a_param_the_job_changes_is_reported_not_lost_with_the_metrics(client: TrackingClient, experiment_id: str):
    from apps.integrations.mlflow.base import MetricPoint

    run_id = client.create_run(experiment_id, "axle-conflict-test")
    client.log_params(run_id, {"lr": "0.1"})

    result = filestore.import_into(
        client, run_id, [MetricPoint("loss", 0.5, 1000, 0)], {"lr": "0.2", "epochs": "3"}, {"t": "v"}
    )

    assert result.conflicts == {"lr": ("0.1", "0.2")}
    run = client.get_run(run_id)
    assert run.params == {"lr": "0.1", "epochs": "3"} and run.metrics["loss"].value == 0.5 and run.tags["t"] == "v"

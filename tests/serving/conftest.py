"""A real registered model for the serving tests that start real model servers."""

import os
import subprocess
import textwrap
import uuid
from pathlib import Path

import pytest
import requests
from django.conf import settings

from tests.integrations.kserve.conftest import crd, standin  # noqa: F401  (the Kubernetes stand-in fixtures)

SERVING_PYTHON = Path("/var/lib/axle/venv/bin/python")

TRAIN = textwrap.dedent(
    """
    import sys
    import mlflow
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    X, y = load_digits(return_X_y=True)
    mlflow.set_experiment("axle-tests-serving")
    with mlflow.start_run() as run:
        model = LogisticRegression(max_iter=200).fit(X / 16.0, y)
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name=sys.argv[1], input_example=X[:2] / 16.0
        )
        print("MODEL", run.info.run_id, info.registered_model_version, info.model_uri, flush=True)
    """
)


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory):
    """(name, run_id, version number, logged model uri, sha256) of a digits model in MLflow's registry."""
    uri = settings.AXLE_MLFLOW_TRACKING_URI
    try:
        ok = requests.get(f"{uri}/health", timeout=3).ok
    except requests.RequestException:
        ok = False
    if not ok or not SERVING_PYTHON.exists():
        pytest.skip("needs the MLflow server and the serving environment of compose/local (stack.sh up)")
    name = f"axle-serving-test-{uuid.uuid4().hex[:8]}"
    out = subprocess.run(
        [str(SERVING_PYTHON), "-c", TRAIN, name],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        cwd=tmp_path_factory.mktemp("train"),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("MODEL "))
    _, run_id, number, model_uri = line.split()
    from apps.integrations.mlflow.client import TrackingClient

    sha = TrackingClient(uri).model_sha256(model_uri)
    return name, run_id, int(number), model_uri, sha


@pytest.fixture
def real_version(trained_model, alice, team):
    from apps.registry.models import ModelVersion, RegisteredModel
    from tests.registry.conftest import make_job

    name, run_id, number, model_uri, sha = trained_model
    job = make_job(alice, team=team, mlflow_run_id=run_id, metrics={"val_accuracy": 0.97})
    model, _ = RegisteredModel.objects.get_or_create(name=name, defaults={"team": team, "created_by": alice})
    return ModelVersion.objects.create(
        model=model,
        number=number,
        job=job,
        mlflow_run_id=run_id,
        source_uri=model_uri,
        artifact_uri=model_uri,
        sha256=sha,
        metrics={"val_accuracy": 0.97},
        created_by=alice,
    )


@pytest.fixture
def serving_dir(tmp_path, settings):
    """Model servers of a test keep their state in a folder of their own and run in a server
    folder of their own (as the users of their slots, axle-serve-N, reachable by the hub's group); all are stopped
    afterwards."""
    import grp
    import shutil

    settings.AXLE_SERVING_DIR = tmp_path / "serving"
    settings.AXLE_MODEL_SERVER_DIR = Path(settings.AXLE_MODEL_SERVER_DIR) / f"pytest-{uuid.uuid4().hex[:8]}"
    try:
        settings.AXLE_MODEL_SERVER_GROUP = grp.getgrnam("axle").gr_name
    except KeyError:
        settings.AXLE_MODEL_SERVER_GROUP = ""
    yield settings.AXLE_SERVING_DIR
    from apps.serving.backends import local_backend

    local_backend().stop_all()
    shutil.rmtree(settings.AXLE_MODEL_SERVER_DIR, ignore_errors=True)

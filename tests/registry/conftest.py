"""Rows and MLflow runs for the registry and lineage tests.

Jobs are built directly as rows (no cluster): what matters here is what they recorded. Tests
marked `mlflow` use the real tracking server of compose/local and skip when it is down; a
"model" there is a folder with an MLmodel file uploaded into a run's artifacts, which is what
MLflow 2 clients and the hub's file-store import leave behind."""

from __future__ import annotations

import hashlib
import itertools
import uuid
from pathlib import Path

import pytest
import requests
from django.conf import settings

from apps.datasets.models import Dataset, DatasetVersion
from apps.integrations.mlflow.base import MetricPoint
from apps.integrations.mlflow.client import TrackingClient
from apps.jobs.models import Job
from apps.registry.models import ModelVersion, RegisteredModel
from tests.factories import ClusterGrantFactory

_seq = itertools.count()

MLMODEL = """artifact_path: model
flavors:
  python_function:
    loader_module: mlflow.sklearn
    model_path: model.pkl
    python_version: 3.11.2
mlflow_version: 3.1.0
"""


def make_job(owner, *, team=None, status=Job.Status.COMPLETED, grant=None, **fields) -> Job:
    n = next(_seq)
    grant = grant or ClusterGrantFactory(user=owner)
    script = fields.pop("script", f"#!/bin/bash\necho {n}\n")
    return Job.objects.create(
        owner=owner,
        grant=grant,
        cluster=grant.cluster,
        team=team,
        name=fields.pop("name", f"train-{n}"),
        status=status,
        script=script,
        script_sha256=hashlib.sha256(script.encode()).hexdigest(),
        cluster_username=grant.cluster_username,
        marker=f"axle-test-{uuid.uuid4().hex}",
        workdir=f"/scratch/{owner.username}/axle-jobs/{n}",
        stdout_path=f"/scratch/{owner.username}/axle-jobs/{n}/out",
        stderr_path=f"/scratch/{owner.username}/axle-jobs/{n}/err",
        **fields,
    )


def make_dataset_version(team, user, name="iris", number=1) -> DatasetVersion:
    dataset, _ = Dataset.objects.get_or_create(team=team, name=name, defaults={"created_by": user})
    return DatasetVersion.objects.create(
        dataset=dataset,
        number=number,
        uri=f"s3://data/{name}/{number}",
        status=DatasetVersion.Status.READY,
        created_by=user,
    )


def make_model_version(job, user, name="iris-clf", number=None, metrics=None) -> ModelVersion:
    model, _ = RegisteredModel.objects.get_or_create(name=name, defaults={"team": job.team, "created_by": user})
    number = number or (model.versions.count() + 1)
    return ModelVersion.objects.create(
        model=model,
        number=number,
        job=job,
        mlflow_run_id=job.mlflow_run_id or uuid.uuid4().hex,
        source_uri=f"runs:/{job.mlflow_run_id or 'x'}/model",
        artifact_uri="mlflow-artifacts:/0/x/artifacts/model",
        sha256=hashlib.sha256(f"{name}{number}".encode()).hexdigest(),
        metrics=metrics or {},
        created_by=user,
    )


@pytest.fixture(scope="session")
def tracking_uri() -> str:
    uri = settings.AXLE_MLFLOW_TRACKING_URI
    try:
        ok = requests.get(f"{uri}/health", timeout=3).ok
    except requests.RequestException:
        ok = False
    if not ok:
        pytest.skip(f"the MLflow server at {uri} does not answer; start it with compose/local/stack.sh up")
    return uri


@pytest.fixture
def mlflow(tracking_uri) -> TrackingClient:
    return TrackingClient(tracking_uri)


@pytest.fixture
def experiment_id(mlflow) -> str:
    return mlflow.ensure_experiment("axle-tests-registry")


def make_run(mlflow: TrackingClient, experiment_id: str, tmp_path: Path, *, model: bool = True, metrics=None) -> str:
    run_id = mlflow.create_run(experiment_id, f"registry-{uuid.uuid4().hex[:8]}")
    points = [MetricPoint(k, v, 1_700_000_000_000, 0) for k, v in (metrics or {"accuracy": 0.9}).items()]
    mlflow.log_metrics(run_id, points)
    if model:
        folder = tmp_path / f"model-{run_id}"
        folder.mkdir()
        (folder / "MLmodel").write_text(MLMODEL)
        (folder / "model.pkl").write_bytes(b"not really a pickle " + run_id.encode())
        mlflow.log_artifacts(run_id, folder, "model")
    return run_id


def unique_name(prefix: str = "axle-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"

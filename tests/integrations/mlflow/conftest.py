"""Fixtures for the MLflow integration tests.

Tests marked `mlflow` talk to the tracking server of compose/local (http://127.0.0.1:5000
unless AXLE_MLFLOW_TRACKING_URI says otherwise) and are skipped, with the reason, when it
does not answer. The file-store tests run the cluster's compute Python
(/var/lib/axle/venv/bin/python, with mlflow and scikit-learn) exactly as a job would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

# These tests need no Django; with `-p no:django` nothing puts the repository on the path.
ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from apps.integrations.mlflow import filestore  # noqa: E402
from apps.integrations.mlflow.client import TrackingClient  # noqa: E402

TRACKING_URI = os.environ.get("AXLE_MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
COMPUTE_PYTHON = Path(os.environ.get("AXLE_COMPUTE_PYTHON", "/var/lib/axle/venv/bin/python"))

# What a user's training script does, with nothing Axle-specific in it.
TRAIN_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import mlflow
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    X, y = load_iris(return_X_y=True)
    with mlflow.start_run() as run:
        print("RUN", run.info.run_id, run.info.experiment_id, flush=True)
        mlflow.log_params({"C": 0.5, "max_iter": 300})
        for step in range(steps):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
            mlflow.log_metric("train/acc", 0.5 + step / (2 * steps), step=step)
        mlflow.set_tag("stage", "probe")
        model = LogisticRegression(C=0.5, max_iter=300).fit(X, y)
        info = mlflow.sklearn.log_model(model, name="model")
        print("MODEL", info.model_uri, flush=True)
    """
)


def _server_up() -> str | None:
    try:
        resp = requests.get(f"{TRACKING_URI}/health", timeout=3)
    except requests.RequestException as exc:
        return f"{type(exc).__name__}"
    return None if resp.ok else f"HTTP {resp.status_code}"


@pytest.fixture(scope="session")
def tracking_uri() -> str:
    problem = _server_up()
    if problem:
        pytest.skip(
            f"the MLflow server at {TRACKING_URI} does not answer /health ({problem}); "
            "start it with compose/local/stack.sh up"
        )
    return TRACKING_URI


@pytest.fixture
def client(tracking_uri: str) -> TrackingClient:
    return TrackingClient(tracking_uri, timeout=30)


@pytest.fixture
def experiment_id(client: TrackingClient) -> str:
    return client.ensure_experiment("axle-tests-integrations-mlflow")


@pytest.fixture
def run_id(client: TrackingClient, experiment_id: str) -> str:
    return client.create_run(experiment_id, f"test-{uuid.uuid4().hex[:8]}", {"axle.test": "1"})


@pytest.fixture(scope="session")
def compute_python() -> Path:
    if not os.access(COMPUTE_PYTHON, os.X_OK):
        pytest.skip(f"{COMPUTE_PYTHON} is missing: the compute Python is installed by compose/local/stack.sh up")
    return COMPUTE_PYTHON


def run_training(
    compute_python: Path, env: dict[str, str], cwd: Path, steps: int = 5, script: str = TRAIN_SCRIPT
) -> subprocess.CompletedProcess[str]:
    script_path = cwd / "train.py"
    script_path.write_text(script)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    result = subprocess.run(
        [str(compute_python), str(script_path), str(steps)],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def local_read(path: str, offset: int) -> tuple[bytes, int]:
    """The hub's `ClusterFiles.read`, on the local disk."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read(1 << 20)
    return data, offset + len(data)


def local_list(directory: str) -> dict[str, int]:
    """`find DIR -type f -printf '%P\\t%s\\n'`, on the local disk."""
    base = Path(directory)
    if not base.is_dir():
        return {}
    return {p.relative_to(base).as_posix(): p.stat().st_size for p in base.rglob("*") if p.is_file()}


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "job" / "mlruns"
    yield root


def bootstrap(root: Path, experiment_id: str, run_id: str, run_name: str = "axle-job") -> dict[str, str]:
    """Lay out the spool for `run_id` and return the job environment that resumes it."""
    filestore.write_files_locally(str(root), filestore.bootstrap_files(experiment_id, run_id, run_name, str(root)))
    return {
        "MLFLOW_TRACKING_URI": filestore.tracking_uri(str(root)),
        "MLFLOW_RUN_ID": run_id,
        "MLFLOW_EXPERIMENT_ID": experiment_id,
        **filestore.ALLOW_FILE_STORE_ENV,
    }

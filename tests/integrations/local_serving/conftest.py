"""Fixtures for the local serving backend.

The server tests need the MLflow server of compose/local (http://127.0.0.1:5000 unless
AXLE_MLFLOW_TRACKING_URI says otherwise) and the serving environment
(/var/lib/axle/venv, with mlflow and scikit-learn); they are skipped, with the reason, when
either is missing. Every server a test starts is stopped in teardown, pass or fail."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from apps.integrations.local_serving.backend import LocalBackend  # noqa: E402
from apps.integrations.mlflow.client import TrackingClient  # noqa: E402
from apps.integrations.serving.base import DeploymentSpec  # noqa: E402

TRACKING_URI = os.environ.get("AXLE_MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
SERVING_VENV = Path(os.environ.get("AXLE_SERVING_VENV", "/var/lib/axle/venv"))
MLFLOW_BIN = SERVING_VENV / "bin" / "mlflow"
# Away from the range a running hub uses by default (5100-5199 from the bottom).
PORTS = (5170, 5199)
NAMESPACE = "staging"

# Two versions of one registered model, as a user's training script would log them.
TRAIN_SCRIPT = textwrap.dedent(
    """
    import sys
    import mlflow
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    name = sys.argv[1]
    X, y = load_iris(return_X_y=True)
    mlflow.set_experiment("axle-tests-local-serving")
    for C in (0.5, 2.0):
        with mlflow.start_run():
            model = LogisticRegression(C=C, max_iter=300).fit(X, y)
            info = mlflow.sklearn.log_model(model, name="model", registered_model_name=name, input_example=X[:2])
            print("MODEL", info.registered_model_version, info.model_uri, flush=True)
    """
)


@dataclass(frozen=True)
class Version:
    model: str
    number: str
    logged_uri: str  # models:/m-…, what the registry hashed
    sha256: str


def _problem() -> str | None:
    if not os.access(MLFLOW_BIN, os.X_OK):
        return f"{MLFLOW_BIN} is missing: the serving environment is installed by compose/local/stack.sh up"
    try:
        resp = requests.get(f"{TRACKING_URI}/health", timeout=3)
    except requests.RequestException as exc:
        return (
            f"the MLflow server at {TRACKING_URI} does not answer /health ({type(exc).__name__}); "
            "start it with compose/local/stack.sh up"
        )
    if not resp.ok:
        return f"the MLflow server at {TRACKING_URI} answers /health with HTTP {resp.status_code}"
    return None


@pytest.fixture(scope="session")
def tracking_uri() -> str:
    problem = _problem()
    if problem:
        pytest.skip(problem)
    return TRACKING_URI


@pytest.fixture(scope="session")
def versions(tracking_uri: str, tmp_path_factory: pytest.TempPathFactory) -> list[Version]:
    """Versions 1 and 2 of a fresh registered model `axle-test-<random>`."""
    name = f"axle-test-{uuid.uuid4().hex[:8]}"
    workdir = tmp_path_factory.mktemp("train")
    script = workdir / "train.py"
    script.write_text(TRAIN_SCRIPT)
    # Only the login (tests/conftest.py) from the test's own MLFLOW_ variables.
    login = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") or k in login}
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    result = subprocess.run(
        [str(SERVING_VENV / "bin" / "python"), str(script), name],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = TrackingClient(tracking_uri, timeout=30)
    found = []
    for line in result.stdout.splitlines():
        if line.startswith("MODEL "):
            _, number, logged_uri = line.split()
            found.append(Version(name, number, logged_uri, client.model_sha256(logged_uri)))
    assert [v.number for v in found] == ["1", "2"], result.stdout
    return found


def spec_for(version: Version, name: str, sha256: str | None = None) -> DeploymentSpec:
    return DeploymentSpec(
        name=name,
        namespace=NAMESPACE,
        model_name=version.model,
        model_version=version.number,
        model_uri=f"models:/{version.model}/{version.number}",
        artifact_sha256=version.sha256 if sha256 is None else sha256,
    )


def make_backend(state_dir: Path, tracking_uri: str) -> LocalBackend:
    return LocalBackend(state_dir, str(MLFLOW_BIN), tracking_uri=tracking_uri, port_range=PORTS, stop_grace=5)


@pytest.fixture
def backend(tmp_path: Path, tracking_uri: str) -> Iterator[LocalBackend]:
    b = make_backend(tmp_path / "serving", tracking_uri)
    try:
        yield b
    finally:
        b.stop_all()

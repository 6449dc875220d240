"""Fixtures for the local serving backend.

The server tests need the MLflow server of compose/local (http://127.0.0.1:5000 unless
AXLE_MLFLOW_TRACKING_URI says otherwise), the serving environment (/var/lib/axle/venv, with
mlflow and scikit-learn) and the serving users (`axle-serve-0`… for the hub, `axle-tserve-0`…
for tests) with sudo (stack.sh up makes
them); they are skipped, with the reason, when one is missing. Every server a test starts is
stopped in teardown, pass or fail. The tests run as root; the servers run as the users of
their slots, exactly as under a hub running as its own user."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
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
SERVING_PYTHON = SERVING_VENV / "bin" / "python"
HUB_SERVE_USER = "axle-serve"  # the pool the hub's own servers run as (sudoers names it)
SERVE_USER = "axle-tserve"  # the test pool's prefix (portal/settings/test.py): axle-tserve-0, …
POOL = int(os.environ.get("AXLE_MODEL_SERVER_POOL", "8"))
# The servers' folders live next to a running hub's, each test run in one of its own.
SERVER_ROOT_PARENT = Path(os.environ.get("AXLE_MODEL_SERVER_DIR", "/var/lib/axle/serving"))
NAMESPACE = "staging"


def hub_group() -> str:
    """The hub's group when the hub has its own user (`axle`), so tests reach the servers as
    production does; root's otherwise."""
    try:
        return grp.getgrnam("axle").gr_name
    except KeyError:
        return ""


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
    path: Path  # the artifact as the hub fetched it, to hand to the server


def _problem() -> str | None:
    if not os.access(SERVING_PYTHON, os.X_OK):
        return f"{SERVING_PYTHON} is missing: the serving environment is installed by compose/local/stack.sh up"
    try:
        pwd.getpwnam(f"{SERVE_USER}-{POOL - 1}")
    except KeyError:
        return f"the serving user {SERVE_USER}-{POOL - 1} is missing: compose/local/stack.sh up makes it"
    if not shutil.which("sudo"):
        return "sudo is missing: compose/local/stack.sh up installs it"
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
            path = Path(client.download_artifact(logged_uri, "", workdir / f"v{number}" / "model"))
            found.append(Version(name, number, logged_uri, client.model_sha256(logged_uri), path))
    assert [v.number for v in found] == ["1", "2"], result.stdout
    return found


def spec_for(version: Version, name: str, sha256: str | None = None, owner: str = "d-1") -> DeploymentSpec:
    return DeploymentSpec(
        name=name,
        namespace=NAMESPACE,
        model_name=version.model,
        model_version=version.number,
        model_uri=f"models:/{version.model}/{version.number}",
        artifact_sha256=version.sha256 if sha256 is None else sha256,
        owner=owner,
        model_path=str(version.path),
    )


def make_backend(state_dir: Path, server_root: Path) -> LocalBackend:
    return LocalBackend(
        state_dir,
        str(SERVING_PYTHON),
        server_root=server_root,
        server_user=SERVE_USER,
        server_group=hub_group(),
        pool_size=POOL,
        stop_grace=5,
    )


@pytest.fixture(scope="session")
def server_root(tracking_uri: str) -> Iterator[Path]:
    root = SERVER_ROOT_PARENT / f"pytest-{uuid.uuid4().hex[:8]}"
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def backend(tmp_path: Path, server_root: Path) -> Iterator[LocalBackend]:
    # A folder of its own per test, so what a test counts is only what it started.
    b = make_backend(tmp_path / "serving", server_root / uuid.uuid4().hex[:8])
    try:
        yield b
    finally:
        b.stop_all()

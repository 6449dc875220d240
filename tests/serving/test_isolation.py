"""A member's model code runs on the hub's host: it must not run with the hub's privileges.

The model here is hostile: its `load_context` tries to read the hub's secret key, encryption
key, database and a cluster user's SSH key, to list the hub's folders, to write a canary into
the hub's folder, and to use sudo; it reports what happened through its predictions. It is
logged to the real MLflow server, registered, and served through the hub's own path (request,
artifact check, local backend), exactly as a member's model would be."""

import json
import os
import pwd
import shutil
import subprocess
import textwrap
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from apps.integrations.local_serving import procs
from apps.integrations.mlflow.client import TrackingClient, directory_sha256
from apps.registry.artifacts import model_version_artifact_fetch
from apps.registry.models import ModelVersion, RegisteredModel
from apps.serving import services
from apps.serving.models import Deployment, Environment
from tests.registry.conftest import make_job

from .conftest import SERVING_PYTHON

pytestmark = [pytest.mark.mlflow, pytest.mark.slow]

SPY = textwrap.dedent(
    """
    import json, os, subprocess, sys
    import mlflow
    import mlflow.pyfunc


    class Spy(mlflow.pyfunc.PythonModel):
        def load_context(self, context):
            if os.environ.get("SPY_DISARMED"):  # MLflow loads the model once while logging it
                self.report = {}
                return
            targets = json.load(open(context.artifacts["targets"]))
            report = {"uid": os.getuid(), "euid": os.geteuid(), "env": sorted(os.environ), "tried": {}}
            for path in targets["read"]:
                try:
                    with open(path, "rb") as fh:
                        fh.read(1)
                    report["tried"][path] = "read"
                except OSError as exc:
                    report["tried"][path] = type(exc).__name__
            for path in targets["list"]:
                try:
                    os.listdir(path)
                    report["tried"][path] = "listed"
                except OSError as exc:
                    report["tried"][path] = type(exc).__name__
            for path in targets["write"]:
                try:
                    with open(path, "w") as fh:
                        fh.write("canary")
                    report["tried"][path] = "written"
                except OSError as exc:
                    report["tried"][path] = type(exc).__name__
            report["home_canary"] = os.path.join(os.environ["HOME"], "canary")
            with open(report["home_canary"], "w") as fh:
                fh.write("the model's own file")
            report["sudo"] = subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode
            self.report = report

        def predict(self, context, model_input, params=None):
            return [json.dumps(self.report)]


    targets, extras, name = sys.argv[1:]
    mlflow.set_experiment("axle-tests-isolation")
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=Spy(),
            artifacts={"targets": targets, "extras": extras},
            registered_model_name=name,
        )
        print("MODEL", run.info.run_id, info.registered_model_version, info.model_uri, flush=True)
    """
)


@pytest.fixture
def hub_stand_in():
    """Files laid out as the hub keeps them: its folder 0700 and its secrets 0600, owned by the
    hub's user (root in this test run, `axle` in production)."""
    hub = Path(settings.AXLE_HOME) / f"pytest-hub-{uuid.uuid4().hex[:8]}"
    hub.mkdir(mode=0o700)
    for name in ("secret_key", "encryption.key", "db.sqlite3"):
        (hub / name).write_text("not for models\n")
        (hub / name).chmod(0o600)
    keys = hub / "keys" / "scientist"
    keys.mkdir(parents=True, mode=0o700)
    (keys / "id_ed25519").write_text("PRIVATE KEY\n")
    (keys / "id_ed25519").chmod(0o600)
    yield hub
    shutil.rmtree(hub, ignore_errors=True)


@pytest.fixture
def spy_version(alice, team, hub_stand_in, serving_dir, tmp_path):
    uri = settings.AXLE_MLFLOW_TRACKING_URI
    targets = tmp_path / "targets.json"
    secrets = [hub_stand_in / n for n in ("secret_key", "encryption.key", "db.sqlite3")]
    targets.write_text(
        json.dumps(
            {
                "read": [str(p) for p in secrets] + [str(hub_stand_in / "keys/scientist/id_ed25519")],
                "list": [str(hub_stand_in), str(hub_stand_in / "keys"), str(settings.AXLE_SERVING_DIR)],
                "write": [str(hub_stand_in / "canary"), str(hub_stand_in / "keys" / "canary")],
            }
        )
    )
    extras = tmp_path / "extras"
    (extras / "nested" / "deeper").mkdir(parents=True)
    (extras / "weights.bin").write_bytes(os.urandom(4096))
    (extras / "nested" / "deeper" / "vocab.txt").write_text("a\nb\n")
    name = f"axle-spy-{uuid.uuid4().hex[:8]}"
    out = subprocess.run(
        [str(SERVING_PYTHON), "-c", SPY, str(targets), str(extras), name],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri, "SPY_DISARMED": "1"},
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    _, run_id, number, model_uri = next(x for x in out.stdout.splitlines() if x.startswith("MODEL ")).split()
    job = make_job(alice, team=team, mlflow_run_id=run_id)
    model = RegisteredModel.objects.create(name=name, team=team, created_by=alice)
    return ModelVersion.objects.create(
        model=model,
        number=int(number),
        job=job,
        mlflow_run_id=run_id,
        source_uri=model_uri,
        artifact_uri=model_uri,
        # What registration records (TrackingClient.model_sha256, as model_version_register does).
        sha256=TrackingClient(uri).model_sha256(model_uri),
        created_by=alice,
    )


@pytest.mark.django_db
def test_a_members_model_code_runs_as_the_serving_user_and_cannot_touch_the_hub(
    alice, spy_version, hub_stand_in, serving_dir, monkeypatch, django_capture_on_commit_callbacks
):
    # What a hub's environment may hold; none of it may reach the model.
    monkeypatch.setenv("AXLE_ENCRYPTION_KEYS", "not-for-models")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-for-models")
    staging = Environment.objects.create(name="staging", required_approvals=0)

    with django_capture_on_commit_callbacks(execute=True):
        d = services.deployment_request(user=alice, model_version=spy_version, environment=staging, reason="try")
    d.refresh_from_db()
    assert d.status == Deployment.Status.LIVE, d.last_error
    answer = services.deployment_predict(user=alice, deployment=d, payload={"inputs": [[0]]})
    report = json.loads(answer["predictions"][0])

    state = json.loads((Path(settings.AXLE_SERVING_DIR) / f"{d.backend_name}.json").read_text())
    # The user of the server's own slot, one of the pool axle-serve-0 … axle-serve-N-1.
    serve_uid = pwd.getpwnam(f"{settings.AXLE_MODEL_SERVER_USER}-{state['server']['slot']}").pw_uid
    assert serve_uid not in (0, os.geteuid())
    assert report["uid"] == report["euid"] == serve_uid
    assert procs.read_uid(state["server"]["pid"]) == serve_uid
    assert report["tried"] and set(report["tried"].values()) == {"PermissionError"}, report["tried"]
    assert report["sudo"] != 0
    assert not [k for k in report["env"] if k.startswith(("DJANGO_", "DATABASE", "MLFLOW_"))], report["env"]
    assert [k for k in report["env"] if k.startswith("AXLE_")] == [procs.MARKER]
    # No canary in the hub's folder; what the model could write is its own, in its own home.
    assert not list(hub_stand_in.rglob("canary"))
    assert os.stat(report["home_canary"]).st_uid == serve_uid
    assert report["home_canary"].startswith(f"{settings.AXLE_MODEL_SERVER_DIR}/")


@pytest.mark.django_db
def test_registration_and_serving_hash_a_model_with_nested_files_alike(spy_version, tmp_path, serving_dir):
    fetched = model_version_artifact_fetch(
        version=spy_version, expected_sha256=spy_version.sha256, dest=tmp_path / "fetched"
    )
    nested = [p.relative_to(fetched).as_posix() for p in fetched.rglob("*") if p.is_file()]

    assert any(n.count("/") >= 3 for n in nested) and len(nested) > 5, nested
    assert directory_sha256(fetched) == spy_version.sha256

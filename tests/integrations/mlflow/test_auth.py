"""MLflow answers only to those it should (issue 8, finding 4): the stack's server runs
MLflow's basic-auth app with no permission by default, and a job's login reaches its own
team's experiment and nothing else.

Against the real server of compose/local; the hub's admin login comes from the file the
stack wrote (tests/conftest.py puts it in MLFLOW_TRACKING_USERNAME/PASSWORD)."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
import requests

from apps.integrations.mlflow import auth
from apps.integrations.mlflow.base import MlflowError
from apps.integrations.mlflow.client import TrackingClient

from .conftest import run_training

pytestmark = pytest.mark.mlflow


@pytest.fixture
def admin(tracking_uri: str) -> TrackingClient:
    if not os.environ.get("MLFLOW_TRACKING_PASSWORD"):
        pytest.fail("no MLflow login for the tests: cluster.env must name AXLE_MLFLOW_PASSWORD_FILE")
    return TrackingClient(tracking_uri, timeout=30)


@pytest.fixture
def two_teams(admin: TrackingClient):
    """Experiments of teams A and B, a registered model of team B, and a job user of team A."""
    tag = uuid.uuid4().hex[:8]
    a = admin.ensure_experiment(f"team-a-{tag}")
    b = admin.ensure_experiment(f"team-b-{tag}")
    b_run = admin.create_run(b, "b's run")
    b_model = f"b-model-{tag}"
    admin._post("registered-models/create", "registering a model", {"name": b_model})
    username = f"axle-job-test-{tag}"
    login = auth.user_with_experiment(admin, username, a)
    yield {"a": a, "b": b, "b_run": b_run, "b_model": b_model, "login": login}
    auth.user_delete(admin, username)


def _as(tracking_uri: str, login: auth.Credential) -> TrackingClient:
    return TrackingClient(tracking_uri, auth=(login.username, login.password), timeout=30)


def _refused(call) -> MlflowError:
    with pytest.raises(MlflowError) as caught:
        call()
    return caught.value


def test_it_refuses_an_anonymous_request(tracking_uri):
    for method, path in [
        ("GET", "api/2.0/mlflow/experiments/search?max_results=1"),
        ("GET", "api/2.0/mlflow/registered-models/search"),
        ("POST", "api/2.0/mlflow/experiments/create"),
        ("GET", "api/2.0/mlflow-artifacts/artifacts"),
        ("POST", "api/2.0/mlflow/users/create"),
    ]:
        resp = requests.request(method, f"{tracking_uri}/{path}", json={"name": "x"}, timeout=10)
        assert resp.status_code == 401, (method, path, resp.status_code)
    # The health check stays open for the stack's probes.
    assert requests.get(f"{tracking_uri}/health", timeout=10).status_code == 200


def test_it_refuses_a_wrong_password(tracking_uri):
    user = os.environ.get("MLFLOW_TRACKING_USERNAME", "axle-hub")
    resp = requests.get(
        f"{tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1", auth=(user, "not-the-password"), timeout=10
    )
    assert resp.status_code == 401


def test_a_job_login_writes_its_teams_experiment(tracking_uri, two_teams):
    job = _as(tracking_uri, two_teams["login"])
    run_id = job.create_run(two_teams["a"], "a's job")
    job.log_params(run_id, {"epochs": "3"})
    assert job.get_run(run_id).params == {"epochs": "3"}


def test_a_job_login_cannot_read_or_write_another_teams_experiment(tracking_uri, two_teams):
    job = _as(tracking_uri, two_teams["login"])
    for refusal in [
        _refused(lambda: job.get_run(two_teams["b_run"])),
        _refused(lambda: job.create_run(two_teams["b"], "intruder")),
        _refused(lambda: job.log_params(two_teams["b_run"], {"x": "1"})),
        _refused(lambda: job._get("experiments/get", "reading an experiment", experiment_id=two_teams["b"])),
    ]:
        assert refusal.status == 403 and "Permission denied" in refusal.message, refusal
    listed = job._post("experiments/search", "searching experiments", {"max_results": 1000})
    assert two_teams["b"] not in {e["experiment_id"] for e in listed.get("experiments", [])}


def test_a_job_login_cannot_read_or_write_another_teams_registered_model(tracking_uri, two_teams):
    job = _as(tracking_uri, two_teams["login"])
    name = two_teams["b_model"]
    for refusal in [
        _refused(lambda: job._get("registered-models/get", "reading a model", name=name)),
        _refused(lambda: job._post("registered-models/update", "editing a model", {"name": name, "description": "x"})),
        _refused(lambda: job._post("model-versions/create", "adding a version", {"name": name, "source": "/tmp/x"})),
    ]:
        assert refusal.status == 403, refusal
    listed = job._get("registered-models/search", "searching models")
    assert name not in {m["name"] for m in listed.get("registered_models", [])}


def test_a_deleted_job_login_no_longer_logs_in(tracking_uri, admin, two_teams):
    login = two_teams["login"]
    assert auth.user_delete(admin, login.username) is True
    refusal = _refused(lambda: _as(tracking_uri, login).create_run(two_teams["a"], "late"))
    assert refusal.status == 401
    assert auth.user_delete(admin, login.username) is False


def test_a_second_login_for_the_same_job_replaces_the_password(tracking_uri, admin, two_teams):
    first = two_teams["login"]
    second = auth.user_with_experiment(admin, first.username, two_teams["a"])
    assert second.password != first.password
    assert _refused(lambda: _as(tracking_uri, first).create_run(two_teams["a"], "old")).status == 401
    _as(tracking_uri, second).create_run(two_teams["a"], "new")


def test_a_credential_never_shows_its_password(two_teams):
    login = two_teams["login"]
    assert login.password not in repr(login) and login.password not in str(login)


@pytest.mark.slow
def test_a_model_reader_downloads_its_model_and_nothing_else(admin, tracking_uri, compute_python, tmp_path):
    """What a model server needs to fetch the model it serves: READ on the registered model
    and on the experiment it was logged in (MLflow serves the files from there)."""
    tag = uuid.uuid4().hex[:8]
    experiment = admin.ensure_experiment(f"team-serve-{tag}")
    run_id = admin.create_run(experiment, "training")
    env = {"MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_RUN_ID": run_id, "MLFLOW_EXPERIMENT_ID": experiment}
    trainer = auth.user_with_experiment(admin, f"axle-job-test-{tag}", experiment)
    try:
        run_training(compute_python, {**env, **trainer.environment()}, tmp_path)
    finally:
        auth.user_delete(admin, trainer.username)
    name = f"served-{tag}"
    admin.register_model(name, admin.find_logged_model(run_id), run_id)
    other = admin.ensure_experiment(f"team-other-{tag}")
    other_run = admin.create_run(other, "theirs")

    def download(login: auth.Credential, uri: str) -> subprocess.CompletedProcess[str]:
        code = "import sys, mlflow.artifacts as a; print(a.download_artifacts(sys.argv[1], dst_path=sys.argv[2]))"
        dest = tmp_path / uuid.uuid4().hex[:6]
        clean = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        return subprocess.run(
            [str(compute_python), "-c", code, uri, str(dest)],
            env={**clean, "MLFLOW_TRACKING_URI": tracking_uri, **login.environment()},
            capture_output=True,
            text=True,
            timeout=120,
        )

    only_model = auth.user_with_permissions(admin, f"axle-serve-test-{tag}-1", [("registered_model", name, "READ")])
    reader = auth.model_reader(admin, f"axle-serve-test-{tag}-2", name, experiment)
    try:
        assert "403" in download(only_model, f"models:/{name}/1").stderr
        fetched = download(reader, f"models:/{name}/1")
        assert fetched.returncode == 0, fetched.stderr[-2000:]
        assert (Path(fetched.stdout.strip().splitlines()[-1]) / "MLmodel").exists()
        reading = _as(tracking_uri, reader)
        assert _refused(lambda: reading.get_run(other_run)).status == 403
        assert _refused(lambda: reading.log_params(run_id, {"x": "1"})).status == 403
    finally:
        auth.user_delete(admin, only_model.username)
        auth.user_delete(admin, reader.username)


def test_a_job_login_may_create_objects_but_they_stay_out_of_other_teams_reach(tracking_uri, admin, two_teams):
    """MLflow's auth app lets any login create experiments and registered models (and makes
    it their manager): a job could squat a name another team uses later. What it makes is
    its own, and it loses it with its login at the end of the job; other teams' objects stay
    out of its reach (README, Security: MLflow)."""
    job = _as(tracking_uri, two_teams["login"])
    squatted = f"team-later-{uuid.uuid4().hex[:8]}"
    experiment = job.ensure_experiment(squatted)
    job._post("registered-models/create", "registering a model", {"name": squatted})
    # Creating is not a way into what exists: the other team's experiment and model still refuse it.
    assert _refused(lambda: job.create_run(two_teams["b"], "intruder")).status == 403
    assert _refused(lambda: job._post("registered-models/create", "registering", {"name": two_teams["b_model"]}))
    # The job ends: its login goes, and with it any hold on what it made.
    auth.user_delete(admin, two_teams["login"].username)
    later = admin.create_run(experiment, "the later team's run")
    assert _refused(lambda: job.get_run(later)).status == 401


def test_a_login_that_made_an_experiment_may_grant_it_to_another_login(tracking_uri, admin, two_teams):
    """Why the hub never uses an experiment it did not make (apps.jobs.experiments): its maker
    holds MANAGE, and with it may grant anyone on it, the hub's own login included, so who
    holds a permission on an experiment does not tell who made it; nor do its tags, which the
    maker sets in the same call."""
    job = _as(tracking_uri, two_teams["login"])
    tag = uuid.uuid4().hex[:8]
    experiment = job.create_experiment(f"team-later-{tag}", {"axle.hub_token": "anything"})
    assert job.experiment_by_name(f"team-later-{tag}") == (experiment, {"axle.hub_token": "anything"})
    accomplice = auth.user_with_permissions(admin, f"axle-job-test-{tag}-2", [])
    try:
        body = {"username": accomplice.username, "resource_type": "experiment", "resource_id": experiment}
        auth._call(job, "POST", auth.PERMISSIONS_GRANT, "granting", {**body, "permission": "MANAGE"})
        _as(tracking_uri, accomplice).create_run(experiment, "the accomplice's run")
    finally:
        auth.user_delete(admin, accomplice.username)

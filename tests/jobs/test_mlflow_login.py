"""Each job logs in to MLflow as itself (issue 8, finding 4): at submission the hub makes an
MLflow user for the job with EDIT on its team's experiment and nothing else, hands it to the
job in its environment, and deletes it when the job is finalized. File-mode jobs, which never
talk to the server, get no login."""

import logging
import uuid

import pytest
from django.conf import settings

from apps.clusters.models import Cluster
from apps.integrations.mlflow.base import MlflowError
from apps.integrations.mlflow.client import TrackingClient
from apps.jobs import tracking
from apps.jobs.models import Job
from tests.factories import ClusterFactory


def _job(mode: str) -> Job:
    return Job(
        uuid=uuid.uuid4(),
        name="digits",
        cluster=ClusterFactory(tracking_mode=mode),
        status=Job.Status.COMPLETED,
        workdir="/scratch/alice/axle-jobs/digits",
    )


@pytest.mark.mlflow
def test_a_job_logs_in_to_its_own_experiment_only_until_it_is_finalized(db, caplog):
    hub = tracking.client()
    if not hub.health():
        pytest.fail(f"MLflow at {hub.display_uri} does not answer: start it with compose/local/stack.sh up")
    tag = uuid.uuid4().hex[:8]
    mine, theirs = hub.ensure_experiment(f"team-mine-{tag}"), hub.ensure_experiment(f"team-theirs-{tag}")
    their_run = hub.create_run(theirs, "their run")
    job = _job(Cluster.TrackingMode.SERVER)
    job.mlflow_run_id = hub.create_run(mine, "the job's run")

    with caplog.at_level(logging.DEBUG):
        env = tracking.job_environment(job, mine, job.mlflow_run_id)
    assert "MLFLOW_TRACKING_USERNAME" in env, (
        f"MLflow at {hub.display_uri} has no login: stack.sh up starts it with one"
    )
    user, password = env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]
    assert user == f"axle-job-{job.uuid}" and len(password) >= 32
    assert password not in caplog.text
    assert password != settings.AXLE_MLFLOW_PASSWORD  # not the hub's own

    as_job = TrackingClient(env["MLFLOW_TRACKING_URI"], auth=(user, password))
    as_job.log_params(job.mlflow_run_id, {"epochs": "3"})
    with pytest.raises(MlflowError) as refused:
        as_job.get_run(their_run)
    assert refused.value.status == 403
    # Several signed-in requests, on fresh connections: every MLflow worker process that
    # could answer has now checked (and cached, mlflow_auth.ini) the job's login.
    for _ in range(6):
        TrackingClient(env["MLFLOW_TRACKING_URI"], auth=(user, password)).get_run(job.mlflow_run_id)

    tracking.finish_run(job)
    # Refused at once, by whichever process answers: no worker goes on trusting its cache.
    for _ in range(6):
        with pytest.raises(MlflowError) as gone:
            TrackingClient(env["MLFLOW_TRACKING_URI"], auth=(user, password)).get_run(job.mlflow_run_id)
        assert gone.value.status == 401
    assert hub.get_run(job.mlflow_run_id).status == "FINISHED"


def test_a_file_mode_job_gets_no_login(db):
    job = _job(Cluster.TrackingMode.FILE)
    env = tracking.job_environment(job, "1", "r" * 32)
    assert env["MLFLOW_TRACKING_URI"].startswith("file:")
    assert not {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} & set(env)


def test_a_job_gets_no_run_without_a_login_when_mlflow_answers_anyone(db, settings):
    """Fail closed: the hub logs in, the server has no auth app; the job waits (LoginMissing is
    transient, so job_submit requeues it) with the sentence instead of running without a login."""
    from http.server import ThreadingHTTPServer
    from threading import Thread

    from apps.integrations.mlflow.auth import LoginMissing
    from tests.integrations.mlflow.test_auth_fails_closed import _OpenMlflow

    server = ThreadingHTTPServer(("127.0.0.1", 0), _OpenMlflow)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings.AXLE_MLFLOW_TRACKING_URI = f"http://127.0.0.1:{server.server_port}"
        settings.AXLE_MLFLOW_USERNAME, settings.AXLE_MLFLOW_PASSWORD = "axle-hub", "hub-password"
        job = _job(Cluster.TrackingMode.SERVER)
        job.cluster.mlflow_tracking_uri = ""
        with pytest.raises(LoginMissing, match="runs without its login"):
            tracking.job_environment(job, "7", "r" * 32)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.mlflow
def test_the_parameters_reach_the_run_with_its_final_tags_and_the_jobs_own_value_stands(db):
    # A batched submission opens the run with one call (its tags) and leaves the parameters
    # to finish_run, which logs them with the final tags in one call.
    hub = tracking.client()
    if not hub.health():
        pytest.fail(f"MLflow at {hub.display_uri} does not answer: start it with compose/local/stack.sh up")
    experiment = hub.ensure_experiment(f"team-params-{uuid.uuid4().hex[:8]}")
    job = _job(Cluster.TrackingMode.SERVER)
    job.parameters = {"EPOCHS": "4", "LR": "0.1"}
    job.mlflow_run_id = hub.create_run(experiment, "batched")
    tracking.finish_run(job)
    run = hub.get_run(job.mlflow_run_id)
    assert run.params == {"EPOCHS": "4", "LR": "0.1"}
    assert run.tags["axle.status"] == Job.Status.COMPLETED and run.status == "FINISHED"

    # The job logged LR itself, with another value: MLflow keeps it, the tags still go.
    other = _job(Cluster.TrackingMode.SERVER)
    other.parameters = {"EPOCHS": "4", "LR": "0.1"}
    other.mlflow_run_id = hub.create_run(experiment, "batched, own value")
    hub.log_params(other.mlflow_run_id, {"LR": "0.5"})
    tracking.finish_run(other)
    run = hub.get_run(other.mlflow_run_id)
    assert run.params["LR"] == "0.5"
    assert run.tags["axle.status"] == Job.Status.COMPLETED and run.status == "FINISHED"

"""A job's MLflow run is made by the job's own code (issue 14, rows 1-2): a batch sends its
jobs to Slurm with no MLflow call per job; each job's `mlflow.start_run()` makes its run,
tagged from MLFLOW_RUN_CONTEXT; the hub finds it (the job page while the job runs, the
finalizer at the end) and makes one at the end for a job that made none."""

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from apps.clusters.transport import slurm_client
from apps.integrations.mlflow import auth as mlflow_auth
from apps.integrations.mlflow.client import TrackingClient
from apps.jobs import selectors, services, tracking
from apps.jobs.models import HubExperiment, Job
from tests.local_cluster import LOCAL_CLUSTER_MISSING, local_cluster_env, make_local_cluster, make_local_grant
from tests.registry.conftest import make_job

S = Job.Status
COMPUTE_PYTHON = Path(os.environ.get("AXLE_LOCAL_PYTHON", "/var/lib/axle/venv/bin/python"))

# The job's code: plain mlflow, a run started twice (as a script calling start_run twice, or
# two ranks each calling it, would).
TWO_RUNS = """
import mlflow
for name in ("first", "second"):
    with mlflow.start_run() as run:
        mlflow.log_metric("loss", 0.5)
        print("run=" + run.info.run_id)
"""


def _hub() -> TrackingClient:
    hub = tracking.client()
    if not hub.health():
        pytest.fail(f"MLflow at {hub.display_uri} does not answer: start it with compose/local/stack.sh up")
    return hub


def _as_job(env: dict[str, str], code: str) -> list[str]:
    """Run `code` with the compute Python and the job's environment; the run ids it printed."""
    if not os.access(COMPUTE_PYTHON, os.X_OK):
        pytest.skip(f"{COMPUTE_PYTHON} is missing: the compute Python is installed by compose/local/stack.sh up")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    result = subprocess.run(
        [str(COMPUTE_PYTHON), "-c", code], env={**clean, **env}, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [line[len("run=") :] for line in result.stdout.splitlines() if line.startswith("run=")]


@pytest.fixture
def job_in_experiment(db, alice):
    hub = _hub()
    name = f"team-jobrun-{uuid.uuid4().hex[:8]}"
    experiment = hub.ensure_experiment(name)
    HubExperiment.objects.create(name=name, mlflow_name=name, experiment_id=experiment)
    job = make_job(alice, status=S.RUNNING, mlflow_experiment_id=experiment, parameters={"LR": "0.1"})
    logins = [tracking.mlflow_username(job)]
    yield job, experiment, logins
    for name in logins:
        mlflow_auth.user_delete(hub, name)


@pytest.mark.mlflow
def test_the_hub_adopts_the_first_run_the_jobs_code_made_and_not_a_forged_one(job_in_experiment, alice):
    job, experiment, logins = job_in_experiment
    hub = tracking.client()
    env = tracking.job_environment(job, experiment, "")
    assert env["MLFLOW_RUN_ID"] == "" and env["MLFLOW_EXPERIMENT_ID"] == experiment
    assert json.loads(env["MLFLOW_RUN_CONTEXT"])["axle.job_id"] == str(job.uuid)

    # Another login with EDIT on the same experiment (a teammate's job) makes a run with the
    # job's id and the job's login name as its user first: MLflow records whatever the
    # client says, so neither makes it the job's.
    forger = f"axle-test-forger-{uuid.uuid4().hex[:8]}"
    logins.append(forger)
    other = mlflow_auth.user_with_experiment(hub, forger, experiment)
    as_other = TrackingClient(settings.AXLE_MLFLOW_TRACKING_URI, auth=(other.username, other.password))
    tags = {"axle.job_id": str(job.uuid), "mlflow.user": tracking.mlflow_username(job)}
    forged = as_other.create_run(experiment, "forged", tags)
    assert tracking.adopt_run(job) == ""
    job.refresh_from_db()
    assert job.mlflow_run_id == ""

    # The job's login may make runs in its experiment: its two runs carry the job's tags.
    first, second = _as_job(env, TWO_RUNS)
    assert tracking.adopt_run(job) == first
    job.refresh_from_db()
    assert job.mlflow_run_id == first
    run = hub.get_run(first)
    assert run.tags["axle.job_id"] == str(job.uuid) and run.tags["mlflow.runName"] == job.name
    assert run.tags["mlflow.user"] == alice.username == run.user_id  # the owner, not the account
    assert {r.run_id for r in hub.runs_tagged_info(experiment, "axle.job_id", str(job.uuid))} == {
        forged,
        first,
        second,
    }
    # Recorded once: a later search never moves the job to another run.
    job.mlflow_run_id = ""
    assert tracking.adopt_run(job) == first

    job.status = S.COMPLETED
    tracking.finish_run(job)
    run = hub.get_run(first)
    assert run.status == "FINISHED" and run.params["LR"] == "0.1" and run.tags["axle.status"] == S.COMPLETED
    assert hub.get_run(forged).status == "RUNNING"  # not the job's: left alone


@pytest.mark.mlflow
def test_a_job_that_never_made_a_run_ends_with_one_holding_its_parameters(job_in_experiment):
    job, experiment, _ = job_in_experiment
    hub = tracking.client()
    Job.objects.filter(pk=job.pk).update(status=S.FAILED, exit_code=3)
    job.refresh_from_db()
    started = job.created_at
    Job.objects.filter(pk=job.pk).update(started_at=started)
    job.refresh_from_db()
    tracking.finish_run(job)
    job.refresh_from_db()
    runs = hub.runs_tagged_info(experiment, "axle.job_id", str(job.uuid))
    assert [r.run_id for r in runs] == [job.mlflow_run_id]
    run = runs[0]
    assert run.status == "FAILED" and run.params == {"LR": "0.1"}
    assert run.tags["axle.status"] == S.FAILED and run.tags["axle.exit_code"] == "3"
    assert run.start_time == int(started.timestamp() * 1000)
    assert run.tags[tracking.RUN_KEY_TAG] == tracking.run_key(job)  # found again on a retry


@pytest.mark.mlflow
def test_the_job_page_asks_mlflow_for_the_jobs_run_once_in_a_few_seconds(job_in_experiment, monkeypatch):
    job, experiment, _ = job_in_experiment
    searches = []
    real = TrackingClient.runs_with_tags

    def counted(self, *args, **kwargs):
        searches.append(args)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(TrackingClient, "runs_with_tags", counted)
    assert selectors.job_curves_version(job=job) == ""
    assert selectors.job_curves_version(job=job) == ""  # the miss is remembered
    assert len(searches) == 1
    [run_id] = _as_job(tracking.job_environment(job, experiment, ""), TWO_RUNS.replace('"first", "second"', '"one",'))
    monkeypatch.setattr(tracking, "ADOPT_EVERY", 0.0)
    assert selectors.job_curves_version(job=job) not in ("", "unavailable")
    assert Job.objects.get(pk=job.pk).mlflow_run_id == run_id
    assert selectors.job_mlflow_run_url(job=job).endswith(f"/runs/{run_id}")


# ---------------------------------------------------------------- on the real cluster


@pytest.fixture(params=["ssh", "rest"])
def grant(request, alice):
    if local_cluster_env() is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    _hub()
    cluster = make_local_cluster(request.param, f"local-{request.param}")
    return make_local_grant(cluster, alice, "scientist", max_cpus=2, max_time_minutes=60)


HEADER = "#!/bin/bash\n#SBATCH --partition=debug\n#SBATCH --time=00:05:00\n#SBATCH --mem=200M\n"


def _logging_script() -> str:
    python = local_cluster_env()["AXLE_LOCAL_PYTHON"]
    code = (
        "import mlflow, time\n"
        "with mlflow.start_run() as run:\n"
        "    mlflow.log_param('seen', 'yes')\n"
        "    mlflow.log_metric('loss', 0.25, step=1)\n"
        "    print('run=' + run.info.run_id, flush=True)\n"
        "    import os; env = os.environ.get\n"
        "    print('env=' + repr((env('MLFLOW_RUN_ID'), env('MLFLOW_EXPERIMENT_NAME'))))\n"
        "    time.sleep(15)\n"
    )
    return f"{HEADER}{python} - <<'EOF'\n{code}EOF\n"


def _wait(job: Job, statuses, poll=None, timeout: float = 300) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        services.jobs_poll()
        job.refresh_from_db()
        if poll:
            poll(job)
        if job.status in statuses:
            return job
        time.sleep(1)
    raise AssertionError(f"job stayed {job.status} ({job.slurm_state} {job.reason}) for {timeout}s")


@pytest.mark.slurm
@pytest.mark.mlflow
@pytest.mark.slow
def test_a_batch_reaches_slurm_with_no_run_made_and_each_job_ends_with_its_run(grant, monkeypatch):
    created = []
    real_create = TrackingClient.create_run

    def counted(self, *args, **kwargs):
        created.append(args)
        return real_create(self, *args, **kwargs)

    monkeypatch.setattr(TrackingClient, "create_run", counted)
    logging_job = services.job_create(
        user=grant.user, cluster=grant.cluster, name="logs", script=_logging_script(), parameters={"LR": "0.1"}
    )
    quiet_jobs = [
        services.job_create(
            user=grant.user,
            cluster=grant.cluster,
            name=f"quiet-{i}",
            script=HEADER + "echo quiet\n",
            parameters={"N": str(i)},
        )
        for i in range(3)
    ]
    jobs = [logging_job, *quiet_jobs]
    services.jobs_submit_batch(grant_id=grant.pk, first=logging_job.pk)
    try:
        for job in jobs:
            job.refresh_from_db()
            assert job.status in (S.PENDING, S.RUNNING, S.COMPLETED), job.last_error
            assert job.mlflow_experiment_id and not job.mlflow_run_id
        assert created == []  # no MLflow run made on the way to Slurm

        seen_running = []

        def page(job):
            # The job page's live poll while the job runs finds the run its code made.
            if job.status == S.RUNNING and selectors.job_run_find(job=job):
                seen_running.append(job.mlflow_run_id)

        monkeypatch.setattr(tracking, "ADOPT_EVERY", 0.0)
        _wait(logging_job, Job.TERMINAL, poll=page)
        assert seen_running, "the page never found the job's run while it ran"
        for job in quiet_jobs:
            _wait(job, Job.TERMINAL)
        for job in jobs:
            services.job_finalize(job_id=job.pk)
            job.refresh_from_db()
            assert job.status == S.COMPLETED and job.finalized_at, job.last_error
    finally:
        with slurm_client(grant) as client:
            for job in jobs:
                job.refresh_from_db()
                if job.slurm_job_id and job.status not in Job.TERMINAL:
                    client.cancel(job.slurm_job_id)

    hub = tracking.client()
    printed = selectors.job_log_read(job=logging_job, stream="stdout").text
    assert f"run={logging_job.mlflow_run_id}" in printed  # the run the job's code made
    # Both transports hand the job an empty MLFLOW_RUN_ID (over the login's own, if any) and
    # its experiment's MLflow name.
    name = HubExperiment.objects.get(experiment_id=logging_job.mlflow_experiment_id).mlflow_name
    assert f"env={('', name)!r}" in printed
    assert not logging_job.mlflow_run_by_hub and all(job.mlflow_run_by_hub for job in quiet_jobs)
    assert seen_running[0] == logging_job.mlflow_run_id
    run = hub.get_run(logging_job.mlflow_run_id)
    assert run.status == "FINISHED" and run.params == {"seen": "yes", "LR": "0.1"}
    assert (
        run.tags["axle.job_id"] == str(logging_job.uuid) and run.tags["axle.slurm_job_id"] == logging_job.slurm_job_id
    )
    assert logging_job.metrics == {"loss": 0.25}
    for job in quiet_jobs:
        runs = hub.runs_tagged_info(job.mlflow_experiment_id, "axle.job_id", str(job.uuid))
        assert [r.run_id for r in runs] == [job.mlflow_run_id]
        assert runs[0].status == "FINISHED" and runs[0].params == {"N": job.parameters["N"]}
        assert runs[0].tags["axle.slurm_job_id"] == job.slurm_job_id
    assert len(created) == len(quiet_jobs)  # made at the end, one for each job that made none


@pytest.mark.mlflow
def test_the_page_of_an_ended_job_whose_run_is_still_to_find_says_so_and_keeps_polling(
    client, job_in_experiment, alice
):
    job, _, _ = job_in_experiment
    Job.objects.filter(pk=job.pk).update(status=S.COMPLETED, exit_code=0)
    client.force_login(alice)
    page = client.get(f"/jobs/{job.uuid}/").content.decode()
    assert "No MLflow run yet" in page and 'id="mlflow-run-none"' in page
    # Not final: the finalizer has the job's run (or makes it) still to record.
    assert 'id="live-job"' in page and 'data-live-final="false"' in page
    # On the old code a run-less ended job was final at once: its page stopped asking.
    Job.objects.filter(pk=job.pk).update(mlflow_experiment_id="")
    assert 'data-live-final="true"' in client.get(f"/jobs/{job.uuid}/").content.decode()


@pytest.mark.django_db
def test_registering_the_model_of_a_job_whose_run_is_not_recorded_yet_says_to_wait(alice, team):
    from apps.core.errors import Conflict
    from apps.registry import services as registry

    job = make_job(alice, team=team, status=S.COMPLETED, mlflow_experiment_id="7")
    with pytest.raises(Conflict, match="not recorded yet"):
        registry.model_version_register(user=alice, model_name="digits", job=job)


@pytest.mark.mlflow
def test_the_pipeline_examples_rest_logging_makes_the_run_the_hub_adopts(job_in_experiment):
    job, experiment, _ = job_in_experiment
    steps = Path(settings.BASE_DIR) / "examples" / "digits-pipeline"
    code = (
        f"import sys; sys.path.insert(0, {str(steps)!r}); import os, steps\n"
        "steps.log_batch(params={'C': 1}, metrics=[('accuracy', 0.9, 1)])\n"
        "steps.log_batch(metrics=[('accuracy', 0.95, 2)])\n"
        "print('run=' + os.environ['MLFLOW_RUN_ID'])\n"
    )
    [run_id] = _as_job(tracking.job_environment(job, experiment, ""), code)
    assert tracking.adopt_run(job) == run_id
    run = tracking.client().get_run(run_id)
    assert run.params == {"C": "1"} and run.metrics["accuracy"].value == 0.95


@pytest.mark.mlflow
def test_a_retried_jobs_experiment_deleted_in_mlflow_is_restored_before_it_is_sent_again(db, alice):
    """A job queued again after a failed batch keeps its recorded experiment; its code makes its
    run there on the node, so the batch checks that experiment as it does a new job's: one an
    MLflow administrator deleted meanwhile is restored before sbatch (the job would fail there)."""
    from apps.jobs.services import submit
    from apps.jobs.services.submit import _Outcome, _prepare_and_deliver
    from tests.factories import TeamFactory

    hub = _hub()
    team = TeamFactory(name=f"retried-{uuid.uuid4().hex[:8]}")
    job = make_job(alice, team=team, status=S.SUBMITTING, attempts=2)
    experiment_id = tracking.hub_experiment_id(job)
    Job.objects.filter(pk=job.pk).update(mlflow_experiment_id=experiment_id)
    job = Job.objects.select_related("cluster", "owner", "team", "grant").get(pk=job.pk)
    hub._post("experiments/delete", "deleting an experiment", {"experiment_id": experiment_id})
    sent = []

    class Files:
        def run(self, argv, **kwargs):
            return None

    class Cluster:
        files = Files()
        submit_makes_folders = True

        def submit(self, req):
            sent.append(req)
            return "4242"

    outcome = _Outcome()
    try:
        _prepare_and_deliver([job], Cluster(), outcome)
    finally:
        submit._release_logins(outcome.logins)
        mlflow_auth.user_delete(hub, tracking.mlflow_username(job))
    assert hub.experiment_stage(experiment_id) == "active"
    assert len(sent) == 1 and sent[0].env["MLFLOW_EXPERIMENT_ID"] == experiment_id


@pytest.mark.django_db
def test_a_finalized_job_without_a_run_is_told_it_has_none_and_mlflow_is_not_asked_again(alice, team, monkeypatch):
    from django.utils import timezone

    from apps.core.errors import Conflict
    from apps.registry import services as registry

    job = make_job(alice, team=team, status=S.COMPLETED, mlflow_experiment_id="7")
    Job.objects.filter(pk=job.pk).update(finalized_at=timezone.now())
    job.refresh_from_db()
    # The finalizer found or made the job's run then; a job finalized without one (its
    # tracking could not be synced) will not get one by waiting.
    assert not tracking.run_pending(job)
    with pytest.raises(Conflict, match="has no MLflow run"):
        registry.model_version_register(user=alice, model_name="digits", job=job)
    searches = []
    monkeypatch.setattr(TrackingClient, "runs_with_tags", lambda self, *a, **k: searches.append(a) or [])
    monkeypatch.setattr(tracking, "ADOPT_EVERY", 0.0)
    assert tracking.page_adopt_run(job) == "" and searches == []


@pytest.mark.mlflow
def test_a_hundred_runs_tagged_with_the_jobs_id_alone_do_not_hide_the_jobs_run(job_in_experiment):
    job, experiment, _ = job_in_experiment
    hub = tracking.client()
    # Older than the job's run and without its key: a search by the job's id alone, 100 runs a
    # page, saw only these and missed the job's run.
    for i in range(101):
        hub.create_run(experiment, f"noise-{i}", {"axle.job_id": str(job.uuid)}, start_time_ms=1000 + i)
    [run_id] = _as_job(tracking.job_environment(job, experiment, ""), TWO_RUNS.replace('"first", "second"', '"one",'))
    assert tracking.adopt_run(job) == run_id
    assert len(hub.runs_tagged_info(experiment, "axle.job_id", str(job.uuid))) == 102  # paged: all of them


@pytest.mark.mlflow
def test_a_teammate_who_read_the_key_and_backdated_a_run_is_not_adopted(job_in_experiment):
    from datetime import timedelta

    from django.utils import timezone

    job, experiment, logins = job_in_experiment
    Job.objects.filter(pk=job.pk).update(started_at=timezone.now() - timedelta(minutes=1))
    job.refresh_from_db()
    [real] = _as_job(tracking.job_environment(job, experiment, ""), TWO_RUNS.replace('"first", "second"', '"one",'))
    # A teammate's job login (EDIT on the same experiment) reads the job's run, key and all,
    # and makes a copy that says it started an hour earlier: the earliest keyed run.
    forger = f"axle-test-forger-{uuid.uuid4().hex[:8]}"
    logins.append(forger)
    other = mlflow_auth.user_with_experiment(tracking.client(), forger, experiment)
    as_other = TrackingClient(settings.AXLE_MLFLOW_TRACKING_URI, auth=(other.username, other.password))
    seen = as_other.get_run(real)
    assert seen.tags[tracking.RUN_KEY_TAG] == tracking.run_key(job)
    forged = as_other.create_run(experiment, seen.run_name, seen.tags, start_time_ms=seen.start_time - 3_600_000)
    assert [r.run_id for r in tracking.client().runs_with_tags(experiment, tracking.job_run_filter(job))] == [
        forged,
        real,
    ]
    # Slurm started the job a minute ago: a run that says it started before that (less the
    # clock skew allowed) is not the job's.
    assert tracking.adopt_run(job) == real


@pytest.mark.mlflow
def test_a_finalizer_killed_after_making_the_final_run_finds_it_on_its_retry(job_in_experiment, monkeypatch):
    job, experiment, _ = job_in_experiment
    Job.objects.filter(pk=job.pk).update(status=S.FAILED, started_at=job.created_at)
    job.refresh_from_db()
    real = TrackingClient.create_run

    def create_then_die(self, *args, **kwargs):
        real(self, *args, **kwargs)
        raise SystemExit("worker killed")  # before the guarded update recorded the run

    monkeypatch.setattr(TrackingClient, "create_run", create_then_die)
    with pytest.raises(SystemExit):
        tracking.finish_run(job)
    monkeypatch.setattr(TrackingClient, "create_run", real)
    job.refresh_from_db()
    assert job.mlflow_run_id == ""
    tracking.finish_run(job)
    job.refresh_from_db()
    runs = tracking.client().runs_tagged_info(experiment, "axle.job_id", str(job.uuid))
    assert [(r.run_id, r.status) for r in runs] == [(job.mlflow_run_id, "FAILED")]


# A rank of a multi-process job: it starts a run and is killed before it ends it.
RANK = """
import os, mlflow
run = mlflow.start_run()
mlflow.log_metric("loss", 0.5)
print("run=" + run.info.run_id, flush=True)
os._exit(0)
"""


@pytest.mark.mlflow
def test_the_jobs_other_runs_still_open_end_with_it(job_in_experiment):
    job, experiment, _ = job_in_experiment
    env = tracking.job_environment(job, experiment, "")
    [first] = _as_job(env, RANK)
    [second] = _as_job(env, RANK)
    hub = tracking.client()
    assert hub.get_run(second).status == "RUNNING"
    Job.objects.filter(pk=job.pk).update(status=S.CANCELLED)
    job.refresh_from_db()
    tracking.finish_run(job)
    assert job.mlflow_run_id == first
    assert hub.get_run(first).status == hub.get_run(second).status == "KILLED"


@pytest.mark.mlflow
def test_the_cluster_logins_own_run_and_experiment_do_not_take_the_jobs_run(job_in_experiment):
    job, experiment, _ = job_in_experiment
    hub = tracking.client()
    env = tracking.job_environment(job, experiment, "")
    assert (
        env["MLFLOW_RUN_ID"] == ""
        and env["MLFLOW_EXPERIMENT_NAME"] == HubExperiment.objects.get(experiment_id=experiment).mlflow_name
    )
    # The cluster login exports a run and an experiment of its own; sbatch gives the job the
    # login's environment with the job's variables over it.
    elsewhere = hub.ensure_experiment(f"login-own-{uuid.uuid4().hex[:8]}")
    login_run = hub.create_run(elsewhere, "the login's")
    login = {"MLFLOW_RUN_ID": login_run, "MLFLOW_EXPERIMENT_NAME": f"login-own-{uuid.uuid4().hex[:8]}"}
    [run_id] = _as_job({**login, **env}, TWO_RUNS.replace('"first", "second"', '"one",'))
    assert run_id != login_run and hub.get_run(run_id).experiment_id == experiment
    assert tracking.adopt_run(job) == run_id


@pytest.mark.mlflow
def test_a_job_whose_code_logged_to_another_experiment_says_the_hub_made_its_run(client, job_in_experiment, alice):
    job, experiment, _ = job_in_experiment
    elsewhere = f"mine-{uuid.uuid4().hex[:8]}"
    code = (
        "import mlflow\n"
        f"mlflow.set_experiment({elsewhere!r})\n"
        "with mlflow.start_run() as run:\n"
        "    print('run=' + run.info.run_id)\n"
    )
    [own] = _as_job(tracking.job_environment(job, experiment, ""), code)
    assert tracking.adopt_run(job) == ""  # not in the job's experiment: the hub does not look there
    Job.objects.filter(pk=job.pk).update(status=S.COMPLETED, exit_code=0)
    job.refresh_from_db()
    tracking.finish_run(job)
    job.refresh_from_db()
    assert job.mlflow_run_id != own and job.mlflow_run_by_hub
    assert tracking.client().get_run(job.mlflow_run_id).tags[tracking.RUN_MADE_BY_TAG] == "hub"
    client.force_login(alice)
    page = client.get(f"/jobs/{job.uuid}/").content.decode()
    assert 'id="mlflow-run-by-hub"' in page and "made no run in its experiment" in page


def _finish_while_a_page_adopts(job, monkeypatch, make_own: bool) -> str:
    """finish_run, with a page adopting a run between the hub's create_run and its guarded
    update: the job's own (made first: `make_own`) or the hub's. The run the page adopted."""
    env = tracking.job_environment(job, job.mlflow_experiment_id, "")
    real = TrackingClient.create_run
    adopted = []

    def create_while_a_page_adopts(self, *args, **kwargs):
        if make_own:  # the job's run (made with the job's tags: its login is already deleted)
            real(self, job.mlflow_experiment_id, job.name, json.loads(env["MLFLOW_RUN_CONTEXT"]))
            adopted.append(tracking.adopt_run(Job.objects.get(pk=job.pk)))
        made = real(self, *args, **kwargs)
        if not make_own:
            adopted.append(tracking.adopt_run(Job.objects.get(pk=job.pk)))
        return made

    monkeypatch.setattr(TrackingClient, "create_run", create_while_a_page_adopts)
    tracking.finish_run(job)
    job.refresh_from_db()
    return adopted[0]


@pytest.mark.mlflow
def test_the_hubs_final_run_gives_way_to_the_jobs_own_found_meanwhile(job_in_experiment, monkeypatch):
    job, experiment, _ = job_in_experiment
    Job.objects.filter(pk=job.pk).update(status=S.COMPLETED, exit_code=0)
    job.refresh_from_db()
    own = _finish_while_a_page_adopts(job, monkeypatch, make_own=True)
    assert own and job.mlflow_run_id == own and not job.mlflow_run_by_hub
    hub = tracking.client()
    active = hub.runs_with_tags(experiment, tracking.job_run_filter(job))
    assert [(r.run_id, r.status) for r in active] == [(own, "FINISHED")]  # the hub's run deleted
    assert len(hub.runs_tagged_info(experiment, "axle.job_id", str(job.uuid))) == 2


@pytest.mark.mlflow
def test_the_hubs_final_run_found_by_a_page_meanwhile_stays(job_in_experiment, monkeypatch):
    job, experiment, _ = job_in_experiment
    Job.objects.filter(pk=job.pk).update(status=S.COMPLETED, exit_code=0)
    job.refresh_from_db()
    hubs = _finish_while_a_page_adopts(job, monkeypatch, make_own=False)
    assert hubs and job.mlflow_run_id == hubs and job.mlflow_run_by_hub
    active = tracking.client().runs_with_tags(experiment, tracking.job_run_filter(job))
    assert [(r.run_id, r.status) for r in active] == [(hubs, "FINISHED")]  # kept, not deleted


@pytest.mark.mlflow
def test_a_batchs_threads_get_the_experiments_name_with_no_query(db, alice, django_assert_num_queries):
    # A batch resolves each experiment once (hub_experiment_id) before its threads, which
    # touch no database, build each job's environment.
    _hub()
    job = make_job(alice, status=S.QUEUED)
    tracking._mlflow_names.clear()
    experiment = tracking.hub_experiment_id(job)
    with django_assert_num_queries(0):
        name = tracking.experiment_mlflow_name(experiment)
    assert name == HubExperiment.objects.get(experiment_id=experiment).mlflow_name


@pytest.mark.django_db
def test_a_job_whose_run_mlflow_refuses_for_good_is_finalized_saying_why(alice, team, monkeypatch):
    """The finalizer stops retrying when MLflow refuses for good (the run was deleted, say), and
    the job keeps the reason: it was written, then wiped by the finalizing update."""
    from apps.integrations.mlflow.base import MlflowError

    job = make_job(alice, team=team, status=S.COMPLETED, mlflow_experiment_id="7", mlflow_run_id="gone-run")

    def refused(job):
        raise MlflowError("run gone-run was deleted", permanent=True, code="RESOURCE_DOES_NOT_EXIST", status=404)

    monkeypatch.setattr(tracking, "finish_run", refused)
    services.job_finalize(job_id=job.pk)
    job.refresh_from_db()
    assert job.finalized_at is not None
    assert job.last_error.startswith("Tracking data could not be synced") and "gone-run was deleted" in job.last_error

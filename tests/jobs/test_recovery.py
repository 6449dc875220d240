"""Recovery without waiting for a task (issue 16): the job's state in the database decides what
happens next. A queued job whose task died is submitted by the re-drive, a submission whose
worker died is found by its marker and never sent twice, a killed attempt's MLflow run is
reused, an outage keeps each job's last known state, and a POST sent again makes no second job."""

import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from apps.clusters.models import Cluster
from apps.clusters.transport import slurm_client
from apps.integrations.mlflow.client import TrackingClient
from apps.integrations.slurm.base import AmbiguousSubmitError, SlurmRejected, TransportError, submit_refusal
from apps.jobs import services, tracking
from apps.jobs.models import Job
from apps.jobs.services import redrive
from apps.jobs.services import submit as submitting
from tests.factories import ClusterFactory, ClusterGrantFactory, local_state
from tests.local_cluster import LOCAL_CLUSTER_MISSING, local_cluster_env, make_local_cluster, make_local_grant
from tests.other_worker import OtherWorker
from tests.registry.conftest import make_job

S = Job.Status


def age(job: Job, seconds: int = 3600) -> None:
    """Let time pass for the job, as if its worker had died that long ago."""
    Job.objects.filter(pk=job.pk).update(updated_at=timezone.now() - timedelta(seconds=seconds))


def search_long_enough(job: Job, settings) -> None:
    """Let the marker search of an unknown job run past its grace."""
    since = timezone.now() - timedelta(seconds=settings.AXLE_RECONCILE_GRACE_SECONDS + 5)
    Job.objects.filter(pk=job.pk, status=S.UNKNOWN).update(unknown_since=since)


# ------------------------------------------------------------ the lease (PostgreSQL, no Slurm)


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_redrive_leaves_a_submission_in_flight_alone_and_takes_it_once_its_worker_died(alice, settings):
    if connection.vendor != "postgresql":
        pytest.skip("the lease that dies with its worker's connection is PostgreSQL's")
    job = make_job(alice, status=S.SUBMITTING, attempts=1)
    age(job, 60)
    worker = OtherWorker(redrive.job_lease_name(job.pk))
    try:
        stats = redrive.jobs_redrive()
        job.refresh_from_db()
        assert job.status == S.SUBMITTING and stats.busy == 1
    finally:
        worker.die()
    noticed = timezone.now()
    stats = redrive.jobs_redrive()
    job.refresh_from_db()
    # Whether sbatch ran is unknown: the marker search decides, from the last heartbeat on but
    # for at least half its grace after the death was noticed (a minute after the heartbeat, a
    # long batch's last sbatch may still be landing).
    assert job.status == S.UNKNOWN and stats.interrupted == 1
    half = timedelta(seconds=settings.AXLE_RECONCILE_GRACE_SECONDS / 2)
    assert noticed - half - timedelta(seconds=1) <= job.unknown_since <= timezone.now() - half


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_submission_whose_worker_just_died_is_searched_for_from_its_heartbeat(alice, settings):
    # A short batch: the heartbeat is the later moment, and the search waits no longer for it.
    settings.AXLE_REDRIVE_SETTLE_SECONDS = 2
    job = make_job(alice, status=S.SUBMITTING, attempts=1)
    grace = settings.AXLE_RECONCILE_GRACE_SECONDS
    age(job, 4)
    heartbeat = Job.objects.get(pk=job.pk).updated_at
    assert timezone.now() - heartbeat < timedelta(seconds=grace / 2)
    redrive.jobs_redrive()
    job.refresh_from_db()
    assert job.status == S.UNKNOWN and job.unknown_since == heartbeat


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_stuck_submission_of_a_long_dead_worker_is_searched_for_after_it_was_noticed(alice, settings):
    job = make_job(alice, status=S.SUBMITTING, attempts=1)
    age(job, settings.AXLE_SUBMIT_STUCK_SECONDS + 60)
    noticed = timezone.now()
    assert services.jobs_find_stuck() == [job.pk]
    job.refresh_from_db()
    half = timedelta(seconds=settings.AXLE_RECONCILE_GRACE_SECONDS / 2)
    assert job.status == S.UNKNOWN and job.unknown_since >= noticed - half - timedelta(seconds=1)


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_redrive_leaves_a_fresh_job_to_its_own_task(alice):
    job = make_job(alice, status=S.QUEUED)
    stats = redrive.jobs_redrive()
    job.refresh_from_db()
    assert job.status == S.QUEUED and job.attempts == 0 and stats.submitted == 0


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_tracking_loop_runs_for_its_configured_minutes_and_alone(settings, monkeypatch):
    # One loop runs AXLE_TRACK_LOOP_SECONDS (minutes on a hub, not one): its successor waits
    # behind a busy task queue once per loop, so tracking pauses that rarely.
    if connection.vendor != "postgresql":
        pytest.skip("the lease that dies with its worker's connection is PostgreSQL's")
    from apps.jobs import tasks

    assert settings.AXLE_TRACK_LOOP_SECONDS >= 240
    ticks = []
    monkeypatch.setattr(tasks, "jobs_tick", lambda: ticks.append(1))
    monkeypatch.setattr(tasks, "jobs_redrive", lambda: None)
    settings.AXLE_TRACK_LOOP_SECONDS = 0.5
    assert tasks.jobs_track(interval=0.05) == "done"
    assert len(ticks) >= 5
    ticks.clear()
    other = OtherWorker("jobs-track")  # another worker's loop runs
    try:
        assert tasks.jobs_track(interval=0.05) == "another tracker holds the lease" and ticks == []
    finally:
        other.die()
    # Its server process lets the lock go as soon as it sees the connection closed.
    deadline = time.monotonic() + 10
    while (answer := tasks.jobs_track(interval=0.05)) != "done" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert answer == "done" and ticks


@pytest.mark.django_db
def test_a_submission_never_found_by_its_marker_is_due_for_the_next_tick(alice, settings):
    # Requeued after the marker search, the job is due at once: the tracking loop's next tick
    # sends it, whether or not its task waits behind a busy queue.
    from apps.jobs.services import reconcile

    since = timezone.now() - timedelta(seconds=settings.AXLE_RECONCILE_GRACE_SECONDS + 5)
    job = make_job(alice, status=S.UNKNOWN, attempts=1, unknown_since=since)
    job = reconcile._reconcile_with(job, [])
    assert job.status == S.QUEUED and job.next_attempt_at <= timezone.now()
    due = Job.objects.filter(status=S.QUEUED, next_attempt_at__lte=timezone.now())
    assert list(due.values_list("pk", flat=True)) == [job.pk]


# ------------------------------------------------------------ outages are not refusals


@pytest.mark.parametrize(
    "said, kind",
    [
        (
            "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)",
            TransportError,
        ),
        ("sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying", TransportError),
        ("sbatch: error: Batch job submission failed: Socket timed out on send/recv operation", AmbiguousSubmitError),
        ("sbatch: error: Batch job submission failed: Invalid partition name specified", SlurmRejected),
    ],
)
def test_a_controller_that_is_down_is_an_outage_and_not_a_refusal(said, kind):
    error = submit_refusal(said)
    assert type(error) is kind
    assert error.permanent == (kind is SlurmRejected)


@pytest.mark.django_db
def test_a_job_api_post_sent_again_with_its_idempotency_key_makes_no_second_job(api, alice):
    cluster = ClusterFactory(name="hpc", job_root="/scratch/{username}/axle", state=local_state())
    ClusterGrantFactory(user=alice, cluster=cluster, cluster_username="alice_hpc", allowed_partitions=["debug"])
    api.force_authenticate(alice)
    body = {"cluster": "hpc", "name": "once", "script": "#!/bin/bash\n#SBATCH --partition=debug\nhostname\n"}
    first = api.post("/api/v1/jobs/", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = api.post("/api/v1/jobs/", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert Job.objects.filter(owner=alice).count() == 1
    other = api.post(
        "/api/v1/jobs/", {**body, "script": body["script"] + "date\n"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
    )
    assert other.status_code == 409 and "Idempotency-Key" in other.json()["detail"]
    new = api.post("/api/v1/jobs/", body, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    assert new.status_code == 201 and Job.objects.filter(owner=alice).count() == 2


# ------------------------------------------------------------ against the local cluster


@pytest.fixture(params=["ssh", "rest"])
def grant(request, alice):
    if local_cluster_env() is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    cluster = make_local_cluster(request.param, f"local-{request.param}")
    return make_local_grant(cluster, alice, "scientist", max_cpus=2, max_time_minutes=60)


SCRIPT = "#!/bin/bash\n#SBATCH --partition=debug\n#SBATCH --time=00:05:00\n#SBATCH --mem=100M\nsleep 1\n"


def finalized(job: Job, timeout: float = 90) -> Job:
    """The job once it ended and the hub mirrored its end onto its run."""
    deadline = time.monotonic() + timeout
    while job.status not in Job.TERMINAL and time.monotonic() < deadline:
        services.jobs_poll()
        job.refresh_from_db()
        time.sleep(1)
    services.job_finalize(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == S.COMPLETED and job.finalized_at, (job.status, job.last_error)
    return job


def on_slurm(grant, job: Job) -> list[str]:
    with slurm_client(grant) as client:
        return [j.job_id for j in client.find_by_comment(job.marker) if not j.is_array_task]


@pytest.mark.slurm
@pytest.mark.mlflow
@pytest.mark.slow
def test_a_queued_job_whose_task_died_is_submitted_by_the_redrive(grant):
    # Created, committed, its task lost with the worker (no task runs in this test).
    job = services.job_create(user=grant.user, cluster=grant.cluster, name="orphaned", script=SCRIPT)
    assert job.status == S.QUEUED
    age(job, 30)
    redrive.jobs_redrive()
    redrive.jobs_redrive()  # running twice never submits twice
    job.refresh_from_db()
    assert job.status in (S.PENDING, S.RUNNING, S.COMPLETED) and job.attempts == 1
    assert on_slurm(grant, job) == [job.slurm_job_id]


@pytest.mark.slurm
@pytest.mark.mlflow
@pytest.mark.slow
def test_a_worker_killed_after_opening_the_run_leaves_one_run_per_job(grant, monkeypatch, settings):
    # The hub opens a run before sbatch only for a job it prepares one by one (here: one
    # tracked in a file store, whose folder gets the run); a batch's plain jobs make theirs.
    Cluster.objects.filter(pk=grant.cluster_id).update(tracking_mode=Cluster.TrackingMode.FILE)
    grant.cluster.refresh_from_db()
    job = services.job_create(user=grant.user, cluster=grant.cluster, name="killed-run", script=SCRIPT)
    real_open_run = tracking.open_run
    for _ in range(2):  # two attempts die after MLflow opened the run, before the job recorded it
        Job.objects.filter(pk=job.pk).update(status=S.QUEUED, next_attempt_at=None)

        def killed(j):
            real_open_run(j)
            raise SystemExit("worker killed")

        monkeypatch.setattr(submitting.tracking, "open_run", killed)
        with pytest.raises(SystemExit):
            services.job_submit(job_id=job.pk)
        monkeypatch.setattr(submitting.tracking, "open_run", real_open_run)
        job.refresh_from_db()
        assert job.status == S.SUBMITTING and not job.mlflow_run_id
        # The re-drive finds the dead submission, the marker search finds no Slurm job.
        age(job, settings.AXLE_RECONCILE_GRACE_SECONDS + 5)
        redrive.jobs_redrive()
        search_long_enough(job, settings)
        services.jobs_reconcile_unknown()
        job.refresh_from_db()
        assert job.status == S.QUEUED and on_slurm(grant, job) == []
    age(job, 30)
    redrive.jobs_redrive()
    job.refresh_from_db()
    assert job.status != S.QUEUED, job.last_error
    assert on_slurm(grant, job) == [job.slurm_job_id]
    client = tracking.client()
    runs = client.runs_tagged(job.mlflow_experiment_id, "axle.job_id", str(job.uuid))
    assert [run_id for run_id, _ in runs] == [job.mlflow_run_id]


@pytest.mark.slurm
@pytest.mark.slow
def test_an_unreachable_cluster_keeps_each_job_in_its_last_known_state(grant, api):
    job = services.job_create(
        user=grant.user, cluster=grant.cluster, name="outage", script=SCRIPT.replace("sleep 1", "sleep 30")
    )
    services.job_submit(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == S.PENDING, job.last_error
    cluster = grant.cluster
    # The login host / slurmrestd stops answering (a port where nothing listens).
    if cluster.transport == Cluster.Transport.SSH:
        Cluster.objects.filter(pk=cluster.pk).update(login_port=1)
    else:
        Cluster.objects.filter(pk=cluster.pk).update(rest_url="http://127.0.0.1:1")
    for _ in range(3):
        stats = services.jobs_poll()
        services.jobs_reconcile_unknown()
        redrive.jobs_redrive()
    assert stats.errors == 1
    job.refresh_from_db()
    assert job.status == S.PENDING and "last known state" in job.last_error
    api.force_authenticate(grant.user)
    shown = api.get(f"/api/v1/jobs/{job.uuid}/").json()
    assert shown["status"] == "pending" and "cannot be asked" in shown["last_error"]

    make_local_cluster(cluster.transport, cluster.name)  # it answers again
    services.jobs_poll()
    job.refresh_from_db()
    assert job.status in (S.PENDING, S.RUNNING) and job.last_error == ""
    with slurm_client(grant) as client:
        client.cancel(job.slurm_job_id)


@pytest.mark.slurm
@pytest.mark.mlflow
@pytest.mark.slow
@pytest.mark.parametrize("killed", ["preparing the runs", "before sbatch", "after sbatch"])
def test_a_worker_killed_in_the_middle_of_a_batch_leaves_each_job_once_on_slurm_with_one_run(
    grant, monkeypatch, settings, killed
):
    # Batched submission (issue 14) takes several queued jobs of a grant at once; a worker
    # killed anywhere in the batch must leave each of them to the re-drive, every one reaching
    # Slurm exactly once with exactly one MLflow run.
    jobs = [
        services.job_create(user=grant.user, cluster=grant.cluster, name=f"killed-batch-{i}", script=SCRIPT)
        for i in range(3)
    ]
    real_start_run, real_prepare, real_deliver = tracking.start_run, submitting._open_run, submitting._deliver

    def dies_after(real):
        def open_then_die(job, *args):
            real(job, *args)
            raise SystemExit("worker killed")

        return open_then_die

    def deliver_then_die(client, requests):
        if killed == "after sbatch":
            real_deliver(client, requests)
        raise SystemExit("worker killed")

    if killed == "preparing the runs":
        # Both ways a batch prepares a job's tracking: concurrently, its login and
        # environment (_open_run, a plain job: its own code makes its run), or one by one,
        # its run, for a job that needs the cluster's files (start_run).
        monkeypatch.setattr(submitting, "_open_run", dies_after(real_prepare))
        monkeypatch.setattr(submitting.tracking, "start_run", dies_after(real_start_run))
    else:
        monkeypatch.setattr(submitting, "_deliver", deliver_then_die)
    for _ in range(3):
        try:
            services.job_submit(job_id=jobs[0].pk)
        except SystemExit:
            break
        # A loaded MLflow timed out before the point of the kill: the jobs wait in the hub
        # for their next attempt, as on a hub; try again at once.
        Job.objects.filter(pk__in=[j.pk for j in jobs], status=S.QUEUED).update(next_attempt_at=None)
    else:
        pytest.fail("the batch never reached the point of the kill")
    monkeypatch.undo()
    try:
        for job in jobs:
            job.refresh_from_db()
            assert job.status == S.SUBMITTING
            assert not job.mlflow_run_id  # made by the job's code, or by the hub at its end
        # The worker is gone (its leases with it): the re-drive sees each job stuck in
        # `submitting`, and the marker search decides whether sbatch ran.
        for job in jobs:
            age(job, settings.AXLE_RECONCILE_GRACE_SECONDS + 5)
        stats = redrive.jobs_redrive()
        assert stats.interrupted == 3
        for job in jobs:
            search_long_enough(job, settings)
        services.jobs_reconcile_unknown()
        for job in jobs:
            job.refresh_from_db()
            if killed == "after sbatch":
                assert job.status in (S.PENDING, S.RUNNING, S.COMPLETED) and job.slurm_job_id, job.last_error
            else:
                assert job.status == S.QUEUED and on_slurm(grant, job) == []
                age(job, 30)
        for _ in range(3):  # a loaded MLflow may time out: the job then waits, as it would on a hub
            redrive.jobs_redrive()
            waiting = Job.objects.filter(pk__in=[j.pk for j in jobs], status=S.QUEUED)
            if not waiting.update(next_attempt_at=None, updated_at=timezone.now() - timedelta(seconds=30)):
                break
        redrive.jobs_redrive()  # once more: never a second submission
        client = tracking.client()
        for job in jobs:
            job.refresh_from_db()
            assert job.status in (S.PENDING, S.RUNNING, S.COMPLETED), job.last_error
            assert on_slurm(grant, job) == [job.slurm_job_id]
        for job in jobs:  # each ends with one run: made at its end (its script makes none)
            finalized(job)
            runs = client.runs_tagged(job.mlflow_experiment_id, "axle.job_id", str(job.uuid))
            assert [run_id for run_id, _ in runs] == [job.mlflow_run_id] and job.mlflow_run_id
    finally:
        with slurm_client(grant) as c:
            for job in jobs:
                job.refresh_from_db()
                if job.slurm_job_id and job.status != S.COMPLETED:
                    c.cancel(job.slurm_job_id)


@pytest.mark.slurm
@pytest.mark.mlflow
@pytest.mark.slow
def test_a_first_attempt_opens_its_run_without_searching_for_an_earlier_one(grant, monkeypatch):
    # The search for a killed attempt's run is MLflow's slowest call under load; a job never
    # sent before cannot have such a run, so its first attempt does not search. (The hub opens
    # a run before sbatch for a job it prepares one by one: here, one tracked in a file store.)
    Cluster.objects.filter(pk=grant.cluster_id).update(tracking_mode=Cluster.TrackingMode.FILE)
    grant.cluster.refresh_from_db()
    searched = []
    real = TrackingClient.runs_tagged

    def runs_tagged(self, experiment_id, key, value):
        searched.append(value)
        return real(self, experiment_id, key, value)

    monkeypatch.setattr(TrackingClient, "runs_tagged", runs_tagged)
    job = services.job_create(user=grant.user, cluster=grant.cluster, name="first-attempt", script=SCRIPT)
    services.job_submit(job_id=job.pk)
    job.refresh_from_db()
    try:
        assert job.status in (S.PENDING, S.RUNNING, S.COMPLETED) and job.attempts == 1, job.last_error
        assert job.mlflow_run_id and searched == []
        runs = tracking.client().runs_tagged(job.mlflow_experiment_id, "axle.job_id", str(job.uuid))
        assert [run_id for run_id, _ in runs] == [job.mlflow_run_id]
    finally:
        job.refresh_from_db()
        if job.slurm_job_id and job.status != S.COMPLETED:
            with slurm_client(grant) as c:
                c.cancel(job.slurm_job_id)

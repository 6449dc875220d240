"""Batched submission against the real local Slurm cluster, through both transports: a
batch of a grant's queued jobs goes in one round trip, each job gets its own answer, and a
batch cut off half-way is reconciled by markers, never submitted again."""

import base64

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_verify
from apps.clusters import transport
from apps.clusters.models import Cluster
from apps.clusters.transport import slurm_client
from apps.integrations.slurm import ssh as ssh_transport
from apps.integrations.slurm.base import AmbiguousSubmitError
from apps.jobs import services, tracking
from apps.jobs.models import Job
from apps.jobs.services import submit as submitting
from tests.jobs.test_contract import assert_found_by_its_marker, script
from tests.local_cluster import LOCAL_CLUSTER_MISSING, local_cluster_env, make_local_cluster, make_local_grant

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

S = Job.Status


@pytest.fixture(params=["ssh", "rest"])
def grant(request, alice):
    if local_cluster_env() is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    cluster = make_local_cluster(request.param, f"local-{request.param}")
    return make_local_grant(cluster, alice, "scientist", max_cpus=2, max_array_size=10, max_time_minutes=60)


def create(grant, n, name="batch", overrides=None) -> list[Job]:
    jobs = []
    for i in range(n):
        body = (overrides or {}).get(i, ("true",))
        job = services.job_create(user=grant.user, cluster=grant.cluster, name=f"{name}-{i}", script=script(*body))
        jobs.append(job)
    return jobs


def cancel(grant, jobs) -> None:
    with slurm_client(grant) as client:
        for job in jobs:
            job.refresh_from_db()
            if job.slurm_job_id:
                try:
                    client.cancel(job.slurm_job_id)
                except Exception:
                    pass


def test_a_batch_goes_in_one_round_trip_and_one_refusal_fails_alone(grant, monkeypatch):
    # A node Slurm does not have: refused at submission whatever else is queued (unlike
    # --mem=100T, which Slurm accepts while a job with a higher priority waits ahead of it).
    jobs = create(grant, 4, overrides={2: ("hostname", "#SBATCH --nodelist=axle-no-such-node")}, name="refusal")
    calls = []
    real = transport.slurm_client

    class Counting:
        def __init__(self, g):
            self.cm = real(g)

        def __enter__(self):
            self.client = self.cm.__enter__()
            original = self.client.submit_many

            def submit_many(reqs):
                calls.append(len(reqs))
                return original(reqs)

            self.client.submit_many = submit_many
            return self.client

        def __exit__(self, *exc):
            del self.client.submit_many
            return self.cm.__exit__(*exc)

    monkeypatch.setattr(submitting, "slurm_client", Counting)
    # Made and recorded once per team (apps.jobs.experiments), not per batch: not counted here.
    tracking.hub_experiment_id(jobs[0])
    with CaptureQueriesContext(connection) as queries:
        services.job_submit(job_id=jobs[0].pk)
    try:
        assert calls == [4]  # one delivery for the whole batch
        for i, job in enumerate(jobs):
            job.refresh_from_db()
            if i == 2:
                assert job.status == S.FAILED and not job.slurm_job_id
                assert "Invalid node name specified" in job.failure_message, job.failure_message
                [refused] = AuditEvent.objects.filter(subject_id=str(job.uuid), action="job.rejected")
                assert refused.after["slurm_message"] == job.failure_message
            else:
                assert job.status == S.PENDING and job.slurm_job_id and job.attempts == 1, job.last_error
                assert job.mlflow_experiment_id and not job.mlflow_run_id  # the job's code makes its run
        ids = [j.slurm_job_id for j in jobs if j.slurm_job_id]
        assert len(set(ids)) == 3
        # The statements do not grow with the batch: taking, recording and auditing are bulk.
        assert len(queries) < 60, len(queries)
        assert audit_verify().ok
    finally:
        cancel(grant, jobs)


def test_a_batchs_statements_do_not_grow_with_its_size(ssh_grant):
    # Taking the jobs' leases, reading their datasets, recording their answers: a statement or
    # two for the batch, not one per job (they were two lock calls and a dataset query a job).
    counts = {}
    for n in (3, 20):
        jobs = create(ssh_grant, n, name=f"size{n}")
        try:
            with CaptureQueriesContext(connection) as queries:
                services.job_submit(job_id=jobs[0].pk)
            counts[n] = len(queries)
            assert all(Job.objects.get(pk=j.pk).status == S.PENDING for j in jobs)
        finally:
            cancel(ssh_grant, jobs)
    assert counts[20] <= counts[3] + 2, counts


def test_a_batch_passes_over_the_jobs_another_worker_holds_and_fills_itself_with_the_next(ssh_grant):
    # Two workers delivering one grant's batches side by side. A task takes its own job and
    # the ones made after it first (its request's jobs), then older ones; a job whose lease
    # another worker holds is passed over and the next one asked for (before: the later task
    # found the earlier one's jobs first, kept only its own and left the rest queued).
    from apps.core.leases import connection as lease_connection
    from tests.pipelines.triggers.test_redrive import OtherWorker

    if lease_connection.vendor != "postgresql":
        pytest.skip("the lease another process holds is PostgreSQL's advisory lock")
    jobs = create(ssh_grant, 6, name="contended")
    other = OtherWorker(submitting.job_lease_name(jobs[4].pk))
    try:
        taken = submitting.jobs_submit_batch(grant_id=ssh_grant.pk, first=jobs[3].pk, limit=3)
        assert sorted(taken) == [jobs[0].pk, jobs[3].pk, jobs[5].pk]
        states = [Job.objects.get(pk=job.pk).status for job in jobs]
        assert states == [S.PENDING, S.QUEUED, S.QUEUED, S.PENDING, S.QUEUED, S.PENDING], states
    finally:
        other.die()
        cancel(ssh_grant, jobs)


def test_a_batch_cut_off_after_its_first_answer_is_reconciled_never_resubmitted(grant, monkeypatch):
    jobs = create(grant, 3, name="cutoff")
    if grant.cluster.transport == Cluster.Transport.SSH:
        # The real command runs to the end on the cluster; the hub sees the connection break
        # after the first job's line, as when the network drops half-way.
        real_run = ssh_transport.SSHClient.run

        def run(self, args, *, stdin=None, timeout=None):
            result = real_run(self, args, stdin=stdin, timeout=timeout)
            if args[:3] == ["/bin/sh", "-c", ssh_transport._BATCH_BOOT]:
                lines = result.stdout.split(b"\n")
                first = next(i for i, line in enumerate(lines) if line.startswith(b"AXLE\t"))
                partial = b"\n".join(lines[: first + 1]) + b"\n" + lines[first + 1][:7]
                raise ssh_transport._ConnectionLost("connection reset", partial)
            return result

        monkeypatch.setattr(ssh_transport.SSHClient, "run", run)
    else:
        from apps.integrations.slurm import rest

        real_many = rest.RestClient.submit_many

        def submit_many(self, reqs):
            answers = real_many(self, reqs)
            return {
                marker: answer if i == 0 else AmbiguousSubmitError("the answer was lost")
                for i, (marker, answer) in enumerate(answers.items())
            }

        monkeypatch.setattr(rest.RestClient, "submit_many", submit_many)
    services.job_submit(job_id=jobs[0].pk)
    monkeypatch.undo()
    try:
        for job in jobs:
            job.refresh_from_db()
        assert jobs[0].status == S.PENDING and jobs[0].slurm_job_id
        assert [j.status for j in jobs[1:]] == [S.UNKNOWN, S.UNKNOWN]
        services.jobs_reconcile_unknown()
        for job in jobs[1:]:
            job.refresh_from_db()
            assert_found_by_its_marker(grant, job, after="job.submit_ambiguous")
        with slurm_client(grant) as client:
            found = client.find_by_comments([j.marker for j in jobs])
        assert sorted(len([i for i in found[j.marker] if not i.is_array_task]) for j in jobs) == [1, 1, 1]
    finally:
        cancel(grant, jobs)


@pytest.fixture
def ssh_grant(alice):
    if local_cluster_env() is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    cluster = make_local_cluster("ssh", "local-ssh")
    return make_local_grant(cluster, alice, "scientist", max_cpus=2, max_array_size=10, max_time_minutes=60)


def test_a_batch_that_never_reached_sbatch_is_queued_again(ssh_grant, monkeypatch):
    # Over SSH only: slurmrestd has no stream, each request is sent whole or not at all.
    grant = ssh_grant
    jobs = create(grant, 2, name="cutshort")
    real_run = ssh_transport.SSHClient.run

    def run(self, args, *, stdin=None, timeout=None):
        if args[:3] == ["/bin/sh", "-c", ssh_transport._BATCH_BOOT]:
            stdin = stdin[:-5]  # the stream arrives cut short: the program refuses to start any sbatch
        return real_run(self, args, stdin=stdin, timeout=timeout)

    monkeypatch.setattr(ssh_transport.SSHClient, "run", run)
    services.job_submit(job_id=jobs[0].pk)
    monkeypatch.undo()
    for job in jobs:
        job.refresh_from_db()
        assert job.status == S.QUEUED and "nothing was submitted" in job.last_error, job.last_error
    with slurm_client(grant) as client:
        assert client.find_by_comments([j.marker for j in jobs]) == {}


def test_a_controller_down_during_a_batch_is_an_outage_and_not_a_refusal(ssh_grant, monkeypatch):
    # bench/chaos.py, slurmctld stopped: a batch over SSH made the job `failed` with
    # "Unable to contact slurm controller" (the batch's answers skipped the classification a
    # single sbatch has). Here the batch prints what each sbatch says while slurmctld is down,
    # over the real SSH connection.
    grant = ssh_grant
    jobs = create(grant, 2, name="ctld-down")
    said = "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)"
    told = base64.b64encode(said.encode()).decode()
    real_run = ssh_transport.SSHClient.run

    def run(self, args, *, stdin=None, timeout=None):
        if args[:3] == ["/bin/sh", "-c", ssh_transport._BATCH_BOOT]:
            lines = "".join(f"AXLE\t{job.marker}\t1\t\t{told}\n" for job in jobs)
            return real_run(self, ["/bin/sh", "-c", 'printf "AXLE-READY\\n%s" "$1"', "sh", lines], timeout=timeout)
        return real_run(self, args, stdin=stdin, timeout=timeout)

    monkeypatch.setattr(ssh_transport.SSHClient, "run", run)
    services.job_submit(job_id=jobs[0].pk)
    monkeypatch.undo()
    for job in jobs:
        job.refresh_from_db()
        assert job.status == S.QUEUED and not job.failure_message, job.failure_message
        assert "controller is not reachable" in job.last_error and job.next_attempt_at


def _record_shared_logins(monkeypatch) -> list:
    made = []
    real = tracking.shared_login

    def shared_login(experiment_id, username):
        login = real(experiment_id, username)
        made.append(login)
        return login

    monkeypatch.setattr(tracking, "shared_login", shared_login)
    return made


def _as(login, experiment_id):
    """Make a run in `experiment_id` as `login` (what a job's `mlflow.start_run()` does); the
    HTTP status MLflow answers (200 when allowed)."""
    from apps.integrations.mlflow.base import MlflowError
    from apps.integrations.mlflow.client import TrackingClient

    client = TrackingClient(tracking.client().base_url, auth=(login.username, login.password))
    try:
        client.create_run(experiment_id, "as the job")
    except MlflowError as exc:
        return exc.status
    return 200


@pytest.mark.mlflow
def test_the_jobs_of_a_batch_share_one_login_deleted_when_the_last_of_them_ends(ssh_grant, monkeypatch):
    """One MLflow user (one password hash on the server) for a batch's jobs of one experiment,
    good for making each job's run; it outlives every job but the last one to end."""
    from apps.integrations.mlflow import auth as mlflow_auth

    grant = ssh_grant
    jobs = create(grant, 3, name="sharedlogin")
    made = _record_shared_logins(monkeypatch)
    users_made = []
    real_call = mlflow_auth._call
    monkeypatch.setattr(
        mlflow_auth,
        "_call",
        lambda client, method, path, what, body: (
            users_made.append(body["username"]) if path == mlflow_auth.USERS_CREATE else None,
            real_call(client, method, path, what, body),
        )[1],
    )
    try:
        services.job_submit(job_id=jobs[0].pk)
        [login] = made
        assert login is not None, "the hub has no MLflow login: stack.sh up starts MLflow with one"
        assert users_made == [login.username] and login.username.startswith("axle-batch-")
        for job in jobs:
            job.refresh_from_db()
            assert job.status == S.PENDING and job.mlflow_login == login.username, job.last_error
            assert _as(login, job.mlflow_experiment_id) == 200
    finally:
        cancel(grant, jobs)
    for i, job in enumerate(jobs):
        Job.objects.filter(pk=job.pk).update(status=S.CANCELLED)
        job.refresh_from_db()
        tracking.finish_run(job)
        expected = 401 if i == len(jobs) - 1 else 200
        assert _as(login, jobs[-1].mlflow_experiment_id) == expected, f"after job {i} ended"


@pytest.mark.mlflow
def test_a_batch_that_was_never_sent_deletes_its_shared_login(ssh_grant, monkeypatch):
    grant = ssh_grant
    jobs = create(grant, 2, name="loginunsent")
    made = _record_shared_logins(monkeypatch)
    real_run = ssh_transport.SSHClient.run

    def run(self, args, *, stdin=None, timeout=None):
        if args[:3] == ["/bin/sh", "-c", ssh_transport._BATCH_BOOT]:
            stdin = stdin[:-5]  # cut short: no sbatch runs
        return real_run(self, args, stdin=stdin, timeout=timeout)

    monkeypatch.setattr(ssh_transport.SSHClient, "run", run)
    services.job_submit(job_id=jobs[0].pk)
    [login] = made
    for job in jobs:
        job.refresh_from_db()
        assert job.status == S.QUEUED and job.mlflow_login == "", job.last_error
    assert _as(login, jobs[0].mlflow_experiment_id or "0") == 401


@pytest.mark.mlflow
def test_the_grants_next_batch_takes_over_the_login_while_its_jobs_hold_it(ssh_grant, monkeypatch):
    """Batches of one grant one after the other share the first one's login (one user made on
    MLflow, not one a batch); it is deleted when the last job of both ends, and the batch after
    that makes a new one instead of handing out the deleted one."""
    from apps.integrations.mlflow import auth as mlflow_auth

    grant = ssh_grant
    jobs = create(grant, 6, name="reuselogin")
    made = _record_shared_logins(monkeypatch)
    users_made = []
    real_call = mlflow_auth._call
    monkeypatch.setattr(
        mlflow_auth,
        "_call",
        lambda client, method, path, what, body: (
            users_made.append(body["username"]) if path == mlflow_auth.USERS_CREATE else None,
            real_call(client, method, path, what, body),
        )[1],
    )
    try:
        submitting.jobs_submit_batch(grant_id=grant.pk, first=jobs[0].pk, limit=2)
        submitting.jobs_submit_batch(grant_id=grant.pk, first=jobs[2].pk, limit=2)
        [login] = made
        assert users_made == [login.username]
        first_four = [Job.objects.get(pk=job.pk) for job in jobs[:4]]
        assert all(j.status == S.PENDING and j.mlflow_login == login.username for j in first_four), [
            (j.status, j.mlflow_login, j.last_error) for j in first_four
        ]
        for i, job in enumerate(first_four):
            Job.objects.filter(pk=job.pk).update(status=S.CANCELLED)
            job.refresh_from_db()
            tracking.finish_run(job)
            expected = 401 if i == len(first_four) - 1 else 200
            assert _as(login, job.mlflow_experiment_id) == expected, f"after job {i} ended"
        # Its last holder ended and it was deleted: the next batch makes a login of its own.
        submitting.jobs_submit_batch(grant_id=grant.pk, first=jobs[4].pk, limit=2)
        assert len(made) == 2 and made[1].username != login.username
        last_two = [Job.objects.get(pk=job.pk) for job in jobs[4:]]
        assert all(j.status == S.PENDING and j.mlflow_login == made[1].username for j in last_two)
        assert _as(made[1], last_two[0].mlflow_experiment_id) == 200
    finally:
        cancel(grant, jobs)

"""The hub's job contract against the real local Slurm cluster, through both transports.

Each test drives the services the way the worker does (submit task, tracking cycles) and
checks what a user would see: status, Slurm's words, logs, accounting."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.clusters.models import Cluster
from apps.clusters.transport import slurm_client
from apps.integrations.slurm import sbatch
from apps.integrations.slurm.base import AmbiguousSubmitError
from apps.jobs import selectors, services, tasks
from apps.jobs.models import Job
from apps.jobs.services import reconcile as reconciling
from apps.jobs.services import submit as submitting
from tests.local_cluster import LOCAL_CLUSTER_MISSING, local_cluster_env, make_local_cluster, make_local_grant

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

S = Job.Status


def script(body: str, *directives: str) -> str:
    lines = ["#!/bin/bash", "#SBATCH --partition=debug", "#SBATCH --time=00:05:00", "#SBATCH --mem=100M", *directives]
    return "\n".join(lines) + "\n" + body + "\n"


@pytest.fixture(params=["ssh", "rest"])
def grant(request, alice):
    if local_cluster_env() is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    cluster = make_local_cluster(request.param, f"local-{request.param}")
    return make_local_grant(cluster, alice, "scientist", max_cpus=2, max_array_size=10, max_time_minutes=60)


def submit(grant, body, *directives, name="contract", parameters=None) -> Job:
    job = services.job_create(
        user=grant.user, cluster=grant.cluster, name=name, script=script(body, *directives), parameters=parameters
    )
    services.job_submit(job_id=job.pk)
    job.refresh_from_db()
    return job


def wait_for(job: Job, statuses, timeout: float = 90) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        services.jobs_poll()
        job.refresh_from_db()
        if job.status in statuses:
            return job
        time.sleep(1)
    raise AssertionError(f"job stayed {job.status} ({job.slurm_state} {job.reason}) for {timeout}s")


def read_all(job: Job, stream: str = "stdout", task=None, limit=16) -> tuple[str, int]:
    """Read the log in small chunks by offset, as the live tail does; count the calls."""
    text, offset, calls = "", 0, 0
    while True:
        chunk = selectors.job_log_read(job=job, stream=stream, offset=offset, task=task, limit=limit)
        calls += 1
        if not chunk.text and chunk.next_offset == offset:
            return text, calls
        text, offset = text + chunk.text, chunk.next_offset


def kill_worker_after_sbatch(monkeypatch) -> None:
    """The worker dies once Slurm has the batch and before the hub recorded its answers."""
    real = submitting.transition_many

    def die_after_sbatch(**kwargs):
        if kwargs.get("action") == "job.submitted":
            raise SystemExit("worker killed")
        return real(**kwargs)

    monkeypatch.setattr(submitting, "transition_many", die_after_sbatch)


def assert_found_by_its_marker(grant, job: Job, *, after: str) -> None:
    """The job went through `after` to unknown, was found on Slurm by its marker (never sent
    twice), and carries the id of the one job Slurm has with that marker."""
    with slurm_client(grant) as client:
        [on_slurm] = [j for j in client.find_by_comment(job.marker) if not j.is_array_task]
    assert job.slurm_job_id == on_slurm.job_id
    assert job.status in Job.TRANSITIONS[S.UNKNOWN] - {S.QUEUED}
    events = AuditEvent.objects.filter(subject_id=str(job.uuid)).order_by("seq")
    actions = list(events.values_list("action", flat=True))
    assert actions.count("job.submitting") == 1 and "job.submitted" not in actions
    assert actions[actions.index(after) + 1] == "job.reconciled"
    reconciled = events.get(action="job.reconciled")
    assert reconciled.after["slurm_job_id"] == on_slurm.job_id and reconciled.after["found_by"] == "marker"


def test_a_job_runs_to_completion_with_logs_and_accounting(grant):
    job = submit(grant, 'echo "hello from $(hostname) lr=$LR"; echo "to stderr" >&2', parameters={"LR": 0.5})
    assert job.status == S.PENDING and job.slurm_job_id.isdigit()
    job = wait_for(job, Job.TERMINAL)
    assert job.status == S.COMPLETED, job.failure_message
    assert job.exit_code == 0
    assert job.accounting["node_list"] and job.accounting["elapsed_seconds"] is not None
    text, calls = read_all(job)
    assert text.startswith("hello from ") and text.strip().endswith("lr=0.5")
    assert calls >= 2  # read incrementally by offset, in several chunks
    assert read_all(job, "stderr")[0] == "to stderr\n"
    actions = list(AuditEvent.objects.filter(subject_id=str(job.uuid)).order_by("seq").values_list("action", flat=True))
    assert actions[:3] == ["job.created", "job.submitting", "job.submitted"]
    assert actions[-1] == "job.completed"


def test_a_running_job_is_cancelled(grant, api):
    job = submit(grant, "sleep 120")
    wait_for(job, {S.RUNNING})
    api.force_authenticate(grant.user)
    response = api.post(f"/api/v1/jobs/{job.uuid}/cancel/")
    assert response.status_code == 200, response.json()
    job = wait_for(job, Job.TERMINAL)
    assert job.status == S.CANCELLED


def test_an_array_job_shows_each_task(grant):
    job = submit(grant, 'echo "task $SLURM_ARRAY_TASK_ID"', "#SBATCH --array=0-2")
    job = wait_for(job, Job.TERMINAL)
    assert job.status == S.COMPLETED
    tasks_ = {t.task_id: t for t in job.tasks.all()}
    assert set(tasks_) == {"0", "1", "2"}
    assert all(t.state.startswith("COMPLETED") for t in tasks_.values())
    assert read_all(job, task="2")[0] == "task 2\n"


def test_an_array_task_that_ended_shows_its_end_while_its_siblings_run(grant):
    # squeue forgets a task once it ends; the poll asks accounting about it in the same sacct.
    # Task 1 may start a moment after task 0 ended (a CPU still being released by the job
    # before): waited for, as long as the task runs (40 s) it is running.
    job = submit(grant, '[ "$SLURM_ARRAY_TASK_ID" = 0 ] && exit 3; sleep 40', "#SBATCH --array=0-1")
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            services.jobs_poll()
            job.refresh_from_db()
            states = dict(job.tasks.values_list("task_id", "state"))
            if states.get("0", "").startswith("FAILED") and states.get("1") == "RUNNING":
                break
            time.sleep(1)
        assert job.status == S.RUNNING
        assert job.tasks.get(task_id="0").state.startswith("FAILED")
        assert job.tasks.get(task_id="1").state == "RUNNING"
    finally:
        job.refresh_from_db()
        if job.status not in Job.TERMINAL:
            services.job_cancel(user=grant.user, job=job)


# Slurm's own words for a memory request no node can hold: sbatch's stderr lines verbatim,
# and slurmrestd's error for the same refusal (ESLURM_REQUESTED_NODE_CONFIG_UNAVAILABLE).
SLURM_REFUSES_100T = {
    Cluster.Transport.SSH: (
        "sbatch: error: Memory specification can not be satisfied\n"
        "sbatch: error: Batch job submission failed: Requested node configuration is not available"
    ),
    Cluster.Transport.REST: "Requested node configuration is not available",
}


def test_slurms_own_rejection_fails_the_job_with_its_words(grant):
    # Within the grant (it sets no memory limit), but more than the node has: Slurm refuses.
    job = submit(grant, "hostname", "#SBATCH --mem=100T")
    assert job.status == S.FAILED
    assert job.failure_message == SLURM_REFUSES_100T[grant.cluster.transport]
    assert job.attempts == 1 and not job.slurm_job_id
    [refused] = AuditEvent.objects.filter(subject_id=str(job.uuid), action="job.rejected")
    assert refused.after["slurm_message"] == job.failure_message


def test_a_policy_rejection_never_reaches_slurm(grant, api):
    api.force_authenticate(grant.user)
    response = api.post(
        "/api/v1/jobs/",
        {"cluster": grant.cluster.name, "script": script("hostname", "#SBATCH -p batch")},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["problems"] == [
        {"line": 5, "message": "Your grant does not allow partition 'batch'; allowed: debug."}
    ]
    assert not Job.objects.exists()


def test_a_worker_killed_after_sbatch_does_not_submit_twice(grant, monkeypatch):
    job = services.job_create(user=grant.user, cluster=grant.cluster, name="killed", script=script("sleep 2"))
    kill_worker_after_sbatch(monkeypatch)
    with pytest.raises(SystemExit):
        services.job_submit(job_id=job.pk)
    monkeypatch.undo()
    job.refresh_from_db()
    assert job.status == S.SUBMITTING and not job.slurm_job_id

    # Later, the periodic tick notices the stuck submission and reconciles by marker.
    Job.objects.filter(pk=job.pk).update(updated_at=timezone.now() - timedelta(minutes=10))
    tasks.jobs_tick()
    job.refresh_from_db()
    assert_found_by_its_marker(grant, job, after="job.submit_interrupted")
    assert wait_for(job, Job.TERMINAL).status == S.COMPLETED


def test_an_ambiguous_failure_waits_in_unknown_and_reconciles(grant, monkeypatch):
    job = services.job_create(user=grant.user, cluster=grant.cluster, name="ambiguous", script=script("true"))
    from apps.clusters import transport

    real = transport.slurm_client

    class DropsAfterSubmit:
        def __init__(self, grant):
            self.cm = real(grant)

        def __enter__(self):
            self.client = self.cm.__enter__()
            original = self.client.submit_many

            def submit_many(reqs):
                original(reqs)
                return {req.comment: AmbiguousSubmitError("connection dropped mid-call") for req in reqs}

            self.client.submit_many = submit_many
            return self.client

        def __exit__(self, *exc):
            del self.client.submit_many  # connections are reused: leave no patched method behind
            return self.cm.__exit__(*exc)

    monkeypatch.setattr(submitting, "slurm_client", DropsAfterSubmit)
    services.job_submit(job_id=job.pk)
    monkeypatch.setattr(submitting, "slurm_client", real)
    job.refresh_from_db()
    if job.status == S.UNKNOWN:  # inline task execution may already have reconciled it
        services.job_reconcile(job_id=job.pk)
        job.refresh_from_db()
    assert_found_by_its_marker(grant, job, after="job.submit_ambiguous")


def test_a_cluster_that_is_down_delays_submission_then_delivers(grant):
    cluster = grant.cluster
    if cluster.transport == Cluster.Transport.SSH:
        Cluster.objects.filter(pk=cluster.pk).update(login_port=1)
    else:
        Cluster.objects.filter(pk=cluster.pk).update(rest_url="http://127.0.0.1:1")
    grant.refresh_from_db()
    job = submit(grant, "echo back")
    assert job.status == S.QUEUED
    assert "could not be reached" in job.last_error and job.next_attempt_at > timezone.now()
    assert job.attempts == 1

    # The cluster comes back; the next due tick delivers it.
    make_local_cluster(cluster.transport, cluster.name)
    Job.objects.filter(pk=job.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    tasks.jobs_tick()
    job.refresh_from_db()
    assert job.status != S.QUEUED, job.last_error
    assert wait_for(job, Job.TERMINAL).status == S.COMPLETED
    assert read_all(job)[0] == "back\n"


def test_tracking_costs_two_slurm_calls_per_account_whatever_the_number_of_jobs(grant):
    jobs = [submit(grant, "sleep 1", name=f"many-{i}") for i in range(5)]
    for job in jobs:
        assert job.slurm_job_id
    stats = services.jobs_poll()
    assert stats.jobs == 5 and stats.groups == 1 and stats.errors == 0
    # One squeue, plus one sacct only if some job already left the queue.
    assert stats.slurm_calls in (1, 2)
    for job in jobs:
        wait_for(job, Job.TERMINAL)


def test_unknown_jobs_are_reconciled_with_one_marker_search_per_account(grant, monkeypatch):
    jobs = [
        services.job_create(user=grant.user, cluster=grant.cluster, name=f"lost-{i}", script=script("true"))
        for i in range(3)
    ]
    kill_worker_after_sbatch(monkeypatch)
    with pytest.raises(SystemExit):  # one batch takes all three
        services.job_submit(job_id=jobs[0].pk)
    monkeypatch.undo()
    Job.objects.filter(pk__in=[j.pk for j in jobs]).update(updated_at=timezone.now() - timedelta(minutes=10))
    services.jobs_find_stuck()

    searches = []
    from apps.clusters import transport

    real_client = transport.slurm_client

    class Counting:
        def __init__(self, grant):
            self.cm = real_client(grant)

        def __enter__(self):
            client = self.cm.__enter__()
            original = client.find_by_comments

            def find_by_comments(markers):
                searches.append(len(markers))
                return original(markers)

            client.find_by_comments = find_by_comments
            self.client = client
            return client

        def __exit__(self, *exc):
            del self.client.find_by_comments
            return self.cm.__exit__(*exc)

    monkeypatch.setattr(reconciling, "slurm_client", Counting)
    services.jobs_reconcile_unknown()
    assert searches == [3]
    for job in jobs:
        job.refresh_from_db()
        assert_found_by_its_marker(grant, job, after="job.submit_interrupted")


def test_a_rest_submission_sends_the_validated_directives_without_reading_the_script_again(alice, monkeypatch):
    if local_cluster_env() is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    grant = make_local_grant(make_local_cluster("rest", "local-rest"), alice, max_time_minutes=60)
    job = services.job_create(
        user=alice, cluster=grant.cluster, name="once", script=script("true", "#SBATCH --time=00:07:00")
    )
    assert [d[1:3] for d in job.script_directives] == [
        ["partition", "debug"],
        ["time", "00:05:00"],
        ["mem", "100M"],
        ["time", "00:07:00"],
    ]
    reads = []
    monkeypatch.setattr(sbatch, "parse_script", lambda script: reads.append(script) or ([], []))
    services.job_submit(job_id=job.pk)
    job.refresh_from_db()
    assert reads == []
    assert job.status in {S.PENDING, S.RUNNING, S.COMPLETED}, job.failure_message
    with slurm_client(grant) as client:
        [on_slurm] = client.find_by_comment(job.marker)
    assert on_slurm.time_limit_minutes == 7  # the script's last --time, as sbatch would take it

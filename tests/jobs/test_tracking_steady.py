"""A steady tracking cycle skips the jobs whose squeue rows and hub columns are what the last
cycle compared and found nothing new in, and still notices every change: a pending reason
Slurm changed, a job that left the queue, a new hub job, a row changed in the hub. On the real
local cluster, through both transports."""

import time

import pytest

from apps.clusters.transport import slurm_client
from apps.jobs import services
from apps.jobs.models import Job
from tests.local_cluster import LOCAL_CLUSTER_MISSING, local_cluster_env, make_local_cluster, make_local_grant

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

S = Job.Status
# Pending for an hour: the job waits for its begin time ("BeginTime"), never runs in the test.
LATER = (
    "\n".join(
        [
            "#!/bin/bash",
            "#SBATCH --partition=debug",
            "#SBATCH --time=00:05:00",
            "#SBATCH --mem=100M",
            "#SBATCH --begin=now+3600",
        ]
    )
    + "\ntrue\n"
)


@pytest.fixture(params=["ssh", "rest"])
def grant(request, alice):
    if local_cluster_env() is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    cluster = make_local_cluster(request.param, f"local-{request.param}")
    return make_local_grant(cluster, alice, "scientist", max_cpus=2, max_time_minutes=60)


def submit(grant, name: str) -> Job:
    job = services.job_create(user=grant.user, cluster=grant.cluster, name=name, script=LATER)
    services.job_submit(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == S.PENDING and job.slurm_job_id, (job.status, job.last_error)
    return job


def steady(expected_jobs: int) -> services.PollStats:
    """Cycles until one examines no job (the cache holds every one), at most five."""
    for _ in range(5):
        stats = services.jobs_poll()
        assert stats.errors == 0 and stats.jobs == expected_jobs
        if stats.examined == 0:
            return stats
    raise AssertionError(f"every cycle examined jobs: the last {stats.examined} of {stats.jobs}")


def test_a_steady_cycle_skips_unchanged_jobs_and_notices_every_change(grant):
    jobs = [submit(grant, f"steady-{i}") for i in range(3)]
    try:
        first = services.jobs_poll()
        assert first.examined == 3  # new to this process: every job compared in full
        for job in jobs:
            job.refresh_from_db()
            assert job.status == S.PENDING and job.reason == "BeginTime"
        assert steady(3).slurm_calls == 1  # one squeue, nothing compared, nothing written

        # Slurm changes a pending reason: the held job is examined and its reason recorded.
        held, left, touched = jobs
        with slurm_client(grant) as client:
            result = client.files.run(["scontrol", "hold", held.slurm_job_id])
            assert result.exit_status == 0, result.err
        stats = services.jobs_poll()
        held.refresh_from_db()
        assert stats.examined == 1 and held.reason == "JobHeldUser"

        # A job that left the queue: examined, asked about in the cycle's one sacct.
        steady(3)
        with slurm_client(grant) as client:
            client.cancel(left.slurm_job_id)
        deadline = time.monotonic() + 60
        while True:
            stats = services.jobs_poll()
            left.refresh_from_db()
            if left.status == S.CANCELLED or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert left.status == S.CANCELLED and left.finished_at

        # A row changed in the hub by a writer that does not touch updated_at: examined,
        # and Slurm's word written again.
        steady(2)
        Job.objects.filter(pk=touched.pk).update(reason="stale")
        stats = services.jobs_poll()
        touched.refresh_from_db()
        assert stats.examined == 1 and touched.reason == "BeginTime"

        # A new hub job: examined on its first cycle, the others skipped.
        steady(2)
        new = submit(grant, "steady-new")
        jobs.append(new)
        stats = services.jobs_poll()
        new.refresh_from_db()
        assert stats.jobs == 3 and stats.examined == 1 and new.reason == "BeginTime"
    finally:
        with slurm_client(grant) as client:
            client.cancel_many([job.slurm_job_id for job in jobs])

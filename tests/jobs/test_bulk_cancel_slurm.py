"""Bulk cancel on the real cluster: one scancel for every selected job of an account."""

import time

import pytest

from apps.audit.models import AuditEvent
from apps.jobs import services
from apps.jobs.models import Job
from tests.local_cluster import LOCAL_CLUSTER_MISSING, local_cluster_env, make_local_cluster, make_local_grant

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SLEEP = "#!/bin/bash\n#SBATCH --partition=debug\n#SBATCH --time=00:05:00\nsleep 240\n"


def test_bulk_cancel_stops_every_selected_job_on_slurm(transactional_db, alice, team):
    if local_cluster_env() is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    cluster = make_local_cluster("ssh", "local-ssh")
    make_local_grant(cluster, alice, "scientist", max_cpus=2, max_time_minutes=30)
    jobs = []
    for i in range(2):
        job = services.job_create(user=alice, cluster=cluster, name=f"bulk-{i}", script=SLEEP, team=team)
        services.job_submit(job_id=job.pk)
        job.refresh_from_db()
        assert job.slurm_job_id, (job.status, job.last_error)
        jobs.append(job)
    problems = services.jobs_cancel(user=alice, jobs=list(Job.objects.filter(pk__in=[j.pk for j in jobs])))
    assert problems == {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        services.jobs_poll()
        if all(Job.objects.get(pk=j.pk).status == Job.Status.CANCELLED for j in jobs):
            break
        time.sleep(1)
    assert [Job.objects.get(pk=j.pk).status for j in jobs] == [Job.Status.CANCELLED] * 2
    assert AuditEvent.objects.filter(action="job.cancel_requested").count() == 2

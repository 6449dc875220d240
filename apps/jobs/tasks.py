"""Background work for jobs. Each task fetches by id and calls one service; all are safe to
run twice."""

import logging
import time
from datetime import timedelta

from django.db import transaction

from apps.core.leases import acquire_lease, release_lease

from . import services
from .models import Job

log = logging.getLogger(__name__)


def job_submit(job_id: int):
    services.job_submit(job_id=job_id)


def job_reconcile(job_id: int):
    services.job_reconcile(job_id=job_id)


def jobs_reconcile():
    """Every unknown job, one marker search per cluster account (after an ambiguous batch)."""
    services.jobs_reconcile_unknown()


def job_finalize(job_id: int):
    services.job_finalize(job_id=job_id)


def jobs_tick() -> services.PollStats:
    """One cycle of everything periodic: due submissions, stuck and unknown jobs, tracking."""
    services.jobs_submit_due()
    services.jobs_find_stuck()
    services.jobs_reconcile_unknown()
    stats = services.jobs_poll()
    # File-mode runs are pulled while they run; ended jobs whose tracking sync failed
    # (MLflow unreachable) are retried.
    for job_id in Job.objects.filter(status=Job.Status.RUNNING, tracking_mode="file").values_list("pk", flat=True):
        try:
            services.job_sync_tracking(job_id=job_id)
        except Exception:
            log.exception("pulling the file store of job %s failed", job_id)
    for job_id in (
        Job.objects.filter(status__in=Job.TERMINAL, finalized_at__isnull=True)
        .exclude(mlflow_run_id="")
        .values_list("pk", flat=True)[:50]
    ):
        services.job_finalize(job_id=job_id)
    return stats


def jobs_track(seconds: int = 55, interval: float = 5.0):
    """Run ``jobs_tick`` every few seconds for about a minute.

    django-q2's schedules fire at most once a minute; live status needs more often, so the
    minutely schedule starts this loop. A lease row keeps two loops from overlapping."""
    deadline = time.monotonic() + seconds
    if not acquire_lease("jobs-track", timedelta(seconds=seconds + 10)):
        return "another tracker holds the lease"
    while time.monotonic() < deadline:
        try:
            jobs_tick()
        except Exception:  # one bad cycle must not end tracking for the minute
            log.exception("tracking cycle failed")
        finally:
            transaction.get_connection().close_if_unusable_or_obsolete()
        time.sleep(interval)
    release_lease("jobs-track")
    return "done"

"""Background work for jobs. Each task fetches by id and calls one service; all are safe to
run twice."""

import logging
import time

from django.conf import settings
from django.db.models import Q

from apps.core.leases import leased_loop, work_lease

from . import services
from .models import Job
from .services.redrive import job_lease_name, jobs_redrive

log = logging.getLogger(__name__)


def job_submit(job_id: int):
    # The job's lease says "in flight" to the re-drive; a task that finds it taken leaves the
    # job to its holder (the job's state, not this task, is the memory of what is left to do).
    with work_lease(job_lease_name(job_id)) as mine:
        if mine:
            services.job_submit(job_id=job_id)


def job_reconcile(job_id: int):
    with work_lease(job_lease_name(job_id)) as mine:
        if mine:
            services.job_reconcile(job_id=job_id)


def jobs_reconcile():
    """Every unknown job, one marker search per cluster account (after an ambiguous batch)."""
    services.jobs_reconcile_unknown()


def job_finalize(job_id: int):
    with work_lease(job_lease_name(job_id)) as mine:
        if mine:
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
        # A wave has no run but a login; a job sent with an experiment, its run to find or make.
        .exclude(Q(mlflow_run_id="", mlflow_experiment_id="") & ~Q(tracking_mode=Job.TRACKING_TRIALS))
        .values_list("pk", flat=True)[:50]
    ):
        job_finalize(job_id)
    return stats


def jobs_track(seconds: float | None = None, interval: float = 5.0):
    """Run ``jobs_tick`` every few seconds, and ``jobs_redrive`` every
    AXLE_REDRIVE_SECONDS, for AXLE_TRACK_LOOP_SECONDS (a few minutes).

    django-q2's schedules fire at most once a minute; live status needs more often, so the
    minutely schedule starts this loop (and each worker process starts one when it spawns, see
    apps.jobs.apps). The loop's lease keeps two loops from overlapping; on PostgreSQL it dies
    with a killed worker, so the next loop starts at once instead of a minute later.

    Each loop queues its successor when it ends, and a queued task waits behind every task
    queued before it: on a busy hub (minutely schedules taking longer than a minute, a burst of
    submissions) that wait is a pause in tracking and re-driving, once per loop. A loop of a few
    minutes (within django-q2's `timeout`) has that pause once in a few minutes, not each
    minute (bench/chaos.py: ended jobs shown pending for minutes behind a backlog of 57 tasks)."""
    if seconds is None:
        seconds = settings.AXLE_TRACK_LOOP_SECONDS
    next_redrive = time.monotonic()

    def cycle():
        nonlocal next_redrive
        if time.monotonic() >= next_redrive:
            next_redrive = time.monotonic() + settings.AXLE_REDRIVE_SECONDS
            jobs_redrive()
        jobs_tick()

    return leased_loop(
        "jobs-track", cycle, seconds=seconds, interval=interval, then="apps.jobs.tasks.jobs_track", log=log
    )

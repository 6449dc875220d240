"""Re-driving jobs from their state in the database, so that no task is the only memory of a
job: a worker killed with its task in hand (or a portal killed between creating a job and
queueing its task) leaves a job that the next re-drive picks up within seconds.

Work on a job holds its lease (`apps.core.leases.work_lease("job:<id>")`; the tasks in
`apps.jobs.tasks` take it); on PostgreSQL the lease dies with the holder's connection, so "not
in flight" is "its lease can be taken". Re-driving is always safe: submission moves a job out
of `queued` with a compare-and-swap, and a submission whose outcome is unknown is found by its
marker, never sent again (`reconcile`)."""

import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from apps.core.errors import Conflict
from apps.core.leases import work_lease
from apps.core.transitions import transition

from ..models import Job
from .finalize import job_finalize
from .reconcile import interrupted_since
from .submit import job_lease_name, job_submit

log = logging.getLogger(__name__)
S = Job.Status


@dataclass
class RedriveStats:
    submitted: int = 0
    interrupted: int = 0
    finalized: int = 0
    busy: int = 0  # in flight elsewhere: left alone


def jobs_redrive(*, budget_seconds: float = 20.0) -> RedriveStats:
    """Take over every job whose work is not in flight: `queued` jobs whose task is gone,
    `submitting` jobs whose worker died (to `unknown`, then found by marker), ended jobs not
    finalized. `unknown` jobs are reconciled by the tracking tick (one marker search per
    account). Stops after ``budget_seconds``; the next round takes the rest."""
    stats = RedriveStats()
    now = timezone.now()
    deadline = time.monotonic() + budget_seconds
    # A job this fresh is its own task's: leave it the time to be taken.
    settle = now - timedelta(seconds=settings.AXLE_REDRIVE_SETTLE_SECONDS)

    for job in Job.objects.filter(status=S.SUBMITTING, updated_at__lt=settle).order_by("updated_at"):
        with work_lease(job_lease_name(job.pk)) as free:
            if not free:
                stats.busy += 1
                continue
            try:
                # The worker died between its last heartbeat and the answer: whether sbatch
                # ran is unknown; the marker search decides (from that heartbeat on, and for
                # at least half its grace from now: see `interrupted_since`).
                transition(
                    obj=job,
                    to=S.UNKNOWN,
                    transitions=Job.TRANSITIONS,
                    action="job.submit_interrupted",
                    fields={"unknown_since": interrupted_since(job)},
                    data={"reason": "the worker stopped while submitting"},
                )
                stats.interrupted += 1
            except Conflict:
                continue

    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    for job_id in (
        Job.objects.filter(due, status=S.QUEUED, updated_at__lt=settle)
        .order_by("created_at")
        .values_list("pk", flat=True)
    ):
        if time.monotonic() > deadline:
            return stats
        with work_lease(job_lease_name(job_id)) as free:
            if not free:
                stats.busy += 1
                continue
            job = job_submit(job_id=job_id)
            stats.submitted += bool(job and job.status != S.QUEUED)

    for job_id in (
        Job.objects.filter(status__in=Job.TERMINAL, finalized_at__isnull=True)
        # A wave has no run but a login; a job sent with an experiment, its run to find or make.
        .exclude(Q(mlflow_run_id="", mlflow_experiment_id="") & ~Q(tracking_mode=Job.TRACKING_TRIALS))
        .order_by("finished_at")
        .values_list("pk", flat=True)[:100]
    ):
        if time.monotonic() > deadline:
            return stats
        with work_lease(job_lease_name(job_id)) as free:
            if not free:
                stats.busy += 1
                continue
            job = job_finalize(job_id=job_id)
            stats.finalized += bool(job and job.finalized_at)
    return stats

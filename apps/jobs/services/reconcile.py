"""Finding jobs whose submission outcome is unknown by their marker, never by submitting
again; and noticing submissions a dead worker left behind."""

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from apps.clusters.transport import slurm_client
from apps.core.errors import Conflict
from apps.core.leases import work_lease
from apps.core.tasks import enqueue
from apps.core.transitions import transition
from apps.integrations.slurm.base import JobInfo, SlurmError

from ..models import Job
from .fold import apply_infos, array_head, combined_state

S = Job.Status


def job_reconcile(*, job_id: int) -> Job | None:
    """Find a job whose submission outcome is unknown by its marker; never submit blindly."""
    job = Job.objects.select_related("grant__cluster").filter(pk=job_id).first()
    if job is None or job.status != S.UNKNOWN:
        return job
    try:
        with slurm_client(job.grant) as client:
            found = client.find_by_comment(job.marker)
    except SlurmError as exc:
        Job.objects.filter(pk=job.pk, status=S.UNKNOWN).update(
            last_error=f"Reconciliation could not reach the cluster: {exc.message}"
        )
        return job
    return _reconcile_with(job, found)


def jobs_reconcile_unknown() -> int:
    """Reconcile every unknown job, with one marker search per cluster account."""
    groups: dict[int, list[Job]] = {}
    for job in Job.objects.filter(status=S.UNKNOWN).select_related("grant__cluster"):
        groups.setdefault(job.grant_id, []).append(job)
    for jobs in groups.values():
        try:
            with slurm_client(jobs[0].grant) as client:
                found = client.find_by_comments([j.marker for j in jobs])
        except SlurmError as exc:
            Job.objects.filter(pk__in=[j.pk for j in jobs], status=S.UNKNOWN).update(
                last_error=f"Reconciliation could not reach the cluster: {exc.message}"
            )
            continue
        for job in jobs:
            try:
                _reconcile_with(job, found.get(job.marker, []))
            except Conflict:
                continue  # someone else moved it meanwhile
    return sum(len(j) for j in groups.values())


def _reconcile_with(job: Job, found: list[JobInfo]) -> Job:
    if found:
        head = array_head(found)
        state = combined_state(found) or S.PENDING
        job = transition(
            obj=job,
            to=state,
            transitions=Job.TRANSITIONS,
            action="job.reconciled",
            fields={
                "slurm_job_id": head,
                "submitted_at": job.submitted_at or timezone.now(),
                "unknown_since": None,
                "last_error": "",
            },
            data={"slurm_job_id": head, "found_by": "marker"},
        )
        apply_infos(job, found)
        return job
    grace = timedelta(seconds=settings.AXLE_RECONCILE_GRACE_SECONDS)
    if job.unknown_since and timezone.now() - job.unknown_since >= grace:
        # Neither the queue nor accounting knows the marker after the grace period: the
        # submission never reached Slurm, so sending it again cannot make a second job.
        job = transition(
            obj=job,
            to=S.QUEUED,
            transitions=Job.TRANSITIONS,
            action="job.requeued",
            fields={
                "unknown_since": None,
                # Due now: the tracking loop's next tick sends it (`jobs_submit_due`) even when
                # the task queued below waits behind a busy queue (21 s in bench/chaos.py).
                "next_attempt_at": timezone.now(),
                "last_error": "The earlier submission never reached Slurm; submitting again.",
            },
            data={"reason": "marker not found on the cluster"},
        )
        enqueue("apps.jobs.tasks.job_submit", job.pk)
    return job


def interrupted_since(job: Job) -> datetime:
    """Where the marker search of a submission whose worker died starts counting its grace:
    the worker's last heartbeat (written just before sbatch ran), but never more than half
    the grace before now, when the death is noticed. The heartbeat alone is too early for a
    long batch (issue 14): a worker killed half a minute into a batch of a hundred sbatch calls
    leaves the one in flight to finish on the cluster (the SSH batch stops at its next line of
    output, slurmrestd completes the requests it took), and slurmctld answers it within its
    MessageTimeout (10 s) of its sending, which was before the death was noticed; searching
    for half the grace (10 s) after that moment cannot miss it, so the job is never sent twice.
    For a short batch the heartbeat is the later of the two, and nothing waits longer."""
    floor = timezone.now() - timedelta(seconds=settings.AXLE_RECONCILE_GRACE_SECONDS / 2)
    return max(job.updated_at, floor)


def jobs_find_stuck() -> list[int]:
    """Jobs whose worker died mid-submission: `submitting` for longer than any sbatch takes."""
    cutoff = timezone.now() - timedelta(seconds=settings.AXLE_SUBMIT_STUCK_SECONDS)
    stuck = []
    for job in Job.objects.filter(status=S.SUBMITTING, updated_at__lt=cutoff):
        with work_lease(f"job:{job.pk}") as free:
            if not free:
                continue  # a live worker is still at it (a slow sbatch): not stuck
            try:
                transition(
                    obj=job,
                    to=S.UNKNOWN,
                    transitions=Job.TRANSITIONS,
                    action="job.submit_interrupted",
                    fields={"unknown_since": interrupted_since(job)},
                    data={"reason": "the worker stopped while submitting"},
                )
                stuck.append(job.pk)
            except Conflict:
                continue
    return stuck

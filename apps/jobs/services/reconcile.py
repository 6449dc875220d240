"""Finding jobs whose submission outcome is unknown by their marker, never by submitting
again; and noticing submissions a dead worker left behind."""

from datetime import timedelta

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
                "next_attempt_at": None,
                "last_error": "The earlier submission never reached Slurm; submitting again.",
            },
            data={"reason": "marker not found on the cluster"},
        )
        enqueue("apps.jobs.tasks.job_submit", job.pk)
    return job


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
                    fields={"unknown_since": job.updated_at},
                    data={"reason": "the worker stopped while submitting"},
                )
                stuck.append(job.pk)
            except Conflict:
                continue
    return stuck

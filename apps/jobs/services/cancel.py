"""Cancelling a job: in the hub's queue, or on Slurm as the job's own account."""

from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.clusters.transport import slurm_client
from apps.core.errors import Conflict, PermissionDenied, Unavailable
from apps.core.transitions import transition
from apps.integrations.slurm.base import SlurmError, SlurmRejected

from ..models import Job
from .fold import apply_infos

S = Job.Status


def job_cancel(*, user, job: Job) -> Job:
    if job.owner_id != user.pk:
        raise PermissionDenied("Only the job's owner can cancel it.")
    if job.is_terminal:
        raise Conflict(f"The job already ended ({job.get_status_display().lower()}).")
    if job.status == S.QUEUED:
        return transition(
            obj=job,
            to=S.CANCELLED,
            transitions=Job.TRANSITIONS,
            action="job.cancelled",
            actor=user,
            fields={"finished_at": timezone.now()},
            data={"where": "hub queue"},
        )
    if not job.slurm_job_id:
        raise Conflict("The job is being handed to Slurm right now; cancel it again in a few seconds.")
    with transaction.atomic():
        audit_record(action="job.cancel_requested", subject=job, actor=user, after={"slurm_job_id": job.slurm_job_id})
    try:
        with slurm_client(job.grant) as client:
            client.cancel(job.slurm_job_id)
            infos = client.queue(job.cluster_username)
    except SlurmRejected as exc:
        raise Conflict(f"Slurm refused to cancel job {job.slurm_job_id}: {exc.message}") from None
    except SlurmError as exc:
        raise Unavailable(f"Cluster {job.cluster.name} could not be reached to cancel the job: {exc.message}") from None
    mine = [i for i in infos if (i.array_job_id or i.job_id) == job.slurm_job_id]
    if mine:
        apply_infos(job, mine)
    job.refresh_from_db()
    return job


def jobs_cancel(*, user, jobs: list[Job]) -> dict[str, str]:
    """Cancel several of the user's jobs: those still in the hub's queue there, the rest with one
    `scancel` per cluster account (however many jobs), then one `squeue` to fold the news.
    Answers {job uuid: problem} for the jobs that could not be cancelled."""
    problems: dict[str, str] = {}
    on_slurm: dict[int, list[Job]] = {}
    for job in jobs:
        if job.owner_id != user.pk:
            problems[str(job.uuid)] = "Only the job's owner can cancel it."
        elif job.is_terminal:
            problems[str(job.uuid)] = f"It already ended ({job.get_status_display().lower()})."
        elif job.status == S.QUEUED or not job.slurm_job_id:
            try:
                job_cancel(user=user, job=job)
            except (Conflict, PermissionDenied) as exc:
                problems[str(job.uuid)] = exc.message
        else:
            on_slurm.setdefault(job.grant_id, []).append(job)
    for group in on_slurm.values():
        grant = group[0].grant
        with transaction.atomic():
            for job in group:
                audit_record(
                    action="job.cancel_requested", subject=job, actor=user, after={"slurm_job_id": job.slurm_job_id}
                )
        try:
            with slurm_client(grant) as client:
                client.cancel_many([job.slurm_job_id for job in group])
                infos = client.queue(grant.cluster_username)
        except SlurmError as exc:
            for job in group:
                problems[str(job.uuid)] = f"Cluster {grant.cluster.name} did not cancel it: {exc.message}"
            continue
        for job in group:
            mine = [i for i in infos if (i.array_job_id or i.job_id) == job.slurm_job_id]
            if mine:
                apply_infos(job, mine)
    return problems

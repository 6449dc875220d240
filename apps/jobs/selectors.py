from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from apps.audit.models import AuditEvent
from apps.core.errors import NotFound

from .models import Job


def job_list(*, user, status: str = "", cluster: str = "", q: str = "") -> QuerySet[Job]:
    qs = (
        Job.objects.filter(owner=user)
        .select_related("cluster", "rerun_of", "reproduced_from")
        .prefetch_related("dataset_versions__dataset")
        .order_by("-created_at")
    )
    if status == "active":
        qs = qs.exclude(status__in=Job.TERMINAL)
    elif status:
        qs = qs.filter(status=status)
    if cluster:
        qs = qs.filter(cluster__name=cluster)
    if q:
        qs = qs.filter(name__icontains=q)
    return qs


def job_get(*, user, job_id) -> Job:
    """A job of the user's own; anybody else's answers as if it did not exist."""
    try:
        job = (
            Job.objects.select_related("cluster", "grant__cluster", "rerun_of", "reproduced_from", "team")
            .prefetch_related("dataset_versions__dataset")
            .filter(owner=user, uuid=job_id)
            .first()
        )
    except ValidationError:
        job = None
    if job is None:
        raise NotFound("No such job.")
    return job


def job_timeline(*, job: Job) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(subject_type="jobs.job", subject_id=str(job.uuid)).order_by("seq")

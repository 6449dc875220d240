"""Listen to the jobs app (below us) instead of letting it enqueue our tasks by name."""

from apps.core.tasks import enqueue
from apps.jobs.models import Job


def register_model_of_finalized_job(sender, *, job: Job, **kwargs) -> None:
    # The periodic model_versions_register_pending retries whatever this misses.
    if job.register_model_as and job.status == Job.Status.COMPLETED:
        enqueue("apps.registry.tasks.model_version_register_from_job", job.pk)

"""A job's tracking data: the file store pulled while it runs, and once it ended, the run
mirrored, its final metrics snapshot, its model registered if asked."""

from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.clusters.models import Cluster
from apps.clusters.transport import slurm_client
from apps.integrations.mlflow.base import MlflowError, MlflowUnavailable
from apps.integrations.slurm.base import SlurmError, UnsupportedOperation

from .. import tracking
from ..models import Job
from ..signals import job_finalized


def job_sync_tracking(*, job_id: int) -> int:
    """While a file-mode job runs, import what it appended to its file store since last time."""
    job = Job.objects.select_related("grant__cluster", "owner", "team").filter(pk=job_id).first()
    if job is None or job.tracking_mode != Cluster.TrackingMode.FILE or not job.mlflow_run_id:
        return 0
    try:
        with slurm_client(job.grant) as client:
            count, state = tracking.import_file_store(job, client.files)
    except UnsupportedOperation:
        return 0  # a REST-only grant: its file store cannot be read while the job runs
    Job.objects.filter(pk=job.pk).update(import_state=state)
    return count


def job_finalize(*, job_id: int) -> Job | None:
    """Once a job ended: pull the rest of a file store, mirror the state and Slurm's
    accounting onto the run, snapshot its final metrics, register its model if asked.
    Safe to repeat; retried by the periodic tick while MLflow is unreachable."""
    job = Job.objects.select_related("grant__cluster", "owner", "team").filter(pk=job_id).first()
    if job is None or not job.is_terminal or job.finalized_at:
        return job
    metrics: dict = {}
    state = job.import_state
    error = ""  # why the tracking data could not be synced, kept on the finalized job
    # A sweep's wave has no run of its own, but a login to delete (`tracking.finish_run`); a
    # job sent with an experiment and no run gets the run its code made, or one made here.
    if job.mlflow_run_id or job.mlflow_experiment_id or not tracking.has_own_run(job):
        try:
            if job.tracking_mode == Cluster.TrackingMode.FILE:
                try:
                    with slurm_client(job.grant) as client:
                        _, state = tracking.import_file_store(job, client.files, final=True)
                        tracking.import_spooled_models(job, client.files)
                except UnsupportedOperation:
                    pass  # a REST-only grant: its file store cannot be read
            tracking.finish_run(job)
            metrics = tracking.final_metrics(job) if job.mlflow_run_id else {}
        except (MlflowUnavailable, SlurmError) as exc:
            Job.objects.filter(pk=job.pk).update(last_error=f"Tracking data not synced yet: {exc}")
            return job
        except MlflowError as exc:
            # MLflow refused for good (the run was deleted, say): say so on the job, stop retrying.
            error = f"Tracking data could not be synced: {exc}"
    with transaction.atomic():
        updated = Job.objects.filter(pk=job.pk, finalized_at__isnull=True).update(
            metrics=metrics, import_state=state or {}, finalized_at=timezone.now(), last_error=error
        )
        if updated:
            audit_record(action="job.tracking_synced", subject=job, after={"metrics": metrics})
    job.refresh_from_db()
    if updated:
        job_finalized.send(sender=Job, job=job)
    return job

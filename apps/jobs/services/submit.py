"""Delivering a queued job to Slurm: resolve its inputs on the cluster, open its MLflow
run, lay out its folder, sbatch, and record the answer.

The rule: record the intent and commit, talk to the cluster with no transaction open, then
record the result with a compare-and-swap transition."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from apps.clusters.models import Cluster
from apps.clusters.transport import slurm_client
from apps.core.errors import Conflict, Unavailable
from apps.core.tasks import enqueue
from apps.core.transitions import transition
from apps.datasets.selectors import dataset_env
from apps.datasets.services import dataset_version_verify
from apps.integrations.mlflow.base import MlflowError, MlflowUnavailable
from apps.integrations.slurm.base import (
    AmbiguousSubmitError,
    RemoteCommandFailed,
    SlurmClient,
    SlurmError,
    SlurmRejected,
    SubmitRequest,
    TransportError,
    UnsupportedOperation,
)
from apps.integrations.slurm.sbatch import Directive

from .. import inputs, tracking, validation
from ..models import Job

S = Job.Status


def _backoff(attempts: int) -> timedelta:
    base = settings.AXLE_SUBMIT_BACKOFF_SECONDS
    return timedelta(seconds=min(base * (2 ** max(attempts - 1, 0)), settings.AXLE_SUBMIT_BACKOFF_MAX_SECONDS))


def _submit_request(job: Job, env: dict[str, str]) -> SubmitRequest:
    return SubmitRequest(
        script=job.script,
        job_name=job.name,
        comment=job.marker,
        workdir=job.workdir,
        env={**job.parameters, **env},
        extra_args=list(job.hub_args),
        script_directives=(
            None if job.script_directives is None else tuple(Directive.from_list(d) for d in job.script_directives)
        ),
    )


class _Superseded(Exception):
    """The job left `submitting` while its inputs were being resolved."""


def _prepare(job: Job, client: SlurmClient) -> dict[str, str]:
    """Resolve the inputs, open the MLflow run and lay out the job folder, all before sbatch.
    Returns the job's environment. Records what it resolved at once (never edited later)."""
    files = client.files
    try:
        files.mkdir(job.workdir)
    except (UnsupportedOperation, RemoteCommandFailed):
        pass  # a REST-only grant, or a folder this account cannot create: sbatch then says why
    resolved: dict = {}

    def still_mine() -> None:
        # A heartbeat between long steps (hashing an image, re-verifying a dataset), so the
        # stuck-submission check does not take a busy worker for a dead one.
        if not Job.objects.filter(pk=job.pk, status=S.SUBMITTING).update(updated_at=timezone.now()):
            raise _Superseded

    if job.code_repo and not job.code_commit:
        resolved["code_commit"] = inputs.resolve_commit(files, job.code_repo, job.code_ref)
    if job.image_path:
        still_mine()
        digest = inputs.image_digest(files, job.image_path)
        if job.image_digest and digest != job.image_digest:
            raise inputs.InputError(
                f"The image {job.image_path} changed since it was recorded ({job.image_digest}, now {digest})."
            )
        resolved["image_digest"] = digest
    versions = list(job.dataset_versions.select_related("dataset"))
    if job.verify_datasets:
        for version in versions:
            still_mine()
            check = dataset_version_verify(version=version, user=job.owner)
            if not check:
                raise inputs.InputError(f"Dataset {version.dataset.name} v{version.number}: {check.message}")
    for key, value in resolved.items():
        setattr(job, key, value)
    experiment_id, run_id = tracking.start_run(job)
    resolved.update(mlflow_experiment_id=experiment_id, mlflow_run_id=run_id)
    # Resolving inputs may outlast AXLE_SUBMIT_STUCK_SECONDS: if the job was taken for stuck
    # meanwhile, it is another worker's now, and a sbatch from here would make a second job.
    if not Job.objects.filter(pk=job.pk, status=S.SUBMITTING).update(**resolved, updated_at=timezone.now()):
        raise _Superseded
    job.mlflow_experiment_id, job.mlflow_run_id = experiment_id, run_id
    if job.tracking_mode == Cluster.TrackingMode.FILE:
        inputs.write_files(files, tracking.mlruns_dir(job), tracking.bootstrap_file_store(job, experiment_id, run_id))
    env = {**tracking.job_environment(job, experiment_id, run_id), **dataset_env(versions)}
    if job.code_repo:
        env.update(AXLE_CODE_REPO=job.code_repo, AXLE_CODE_COMMIT=job.code_commit)
    if job.image_path:
        env["AXLE_IMAGE"] = job.image_path
    return env


def job_submit(*, job_id: int) -> Job | None:
    """Deliver a queued job to Slurm. Safe to run twice: only the run that moves the job
    from queued to submitting goes on."""
    job = Job.objects.select_related("grant__cluster").filter(pk=job_id).first()
    if job is None or job.status != S.QUEUED:
        return job
    if job.next_attempt_at and job.next_attempt_at > timezone.now():
        return job
    try:
        transition(
            obj=job,
            to=S.SUBMITTING,
            transitions=Job.TRANSITIONS,
            action="job.submitting",
            fields={"attempts": job.attempts + 1},
        )
    except Conflict:
        return job  # another worker took it

    # The job keeps the request checked at creation; the grant may have been narrowed,
    # revoked or have expired since, and what Slurm gets must fit the grant of now.
    if problems := validation.grant_problems_at_submission(job=job, grant=job.grant):
        message = "The job no longer fits your grant, so it was not submitted: " + "; ".join(problems)
        return transition(
            obj=job,
            to=S.FAILED,
            transitions=Job.TRANSITIONS,
            action="job.grant_refused",
            fields={"failure_message": message, "finished_at": timezone.now()},
            data={"problems": problems},
        )

    # No transaction is open from here until the answer is recorded.
    try:
        with slurm_client(job.grant) as client:
            env = _prepare(job, client)
            slurm_job_id = client.submit(_submit_request(job, env))
    except _Superseded:
        return Job.objects.get(pk=job.pk)
    except inputs.InputError as exc:
        return transition(
            obj=job,
            to=S.FAILED,
            transitions=Job.TRANSITIONS,
            action="job.inputs_refused",
            fields={"failure_message": str(exc), "finished_at": timezone.now()},
            data={"error": str(exc)},
        )
    except (MlflowUnavailable, Unavailable) as exc:
        return _requeue(job, str(exc), what="MLflow or the cluster")
    except MlflowError as exc:
        return transition(
            obj=job,
            to=S.FAILED,
            transitions=Job.TRANSITIONS,
            action="job.tracking_refused",
            fields={"failure_message": f"MLflow refused the job's run: {exc}", "finished_at": timezone.now()},
            data={"error": str(exc)},
        )
    except SlurmRejected as exc:
        return transition(
            obj=job,
            to=S.FAILED,
            transitions=Job.TRANSITIONS,
            action="job.rejected",
            fields={"failure_message": exc.message, "finished_at": timezone.now(), "last_error": ""},
            data={"slurm_message": exc.message},
        )
    except AmbiguousSubmitError as exc:
        job = transition(
            obj=job,
            to=S.UNKNOWN,
            transitions=Job.TRANSITIONS,
            action="job.submit_ambiguous",
            fields={"unknown_since": timezone.now(), "last_error": exc.message},
            data={"error": exc.message},
        )
        enqueue("apps.jobs.tasks.job_reconcile", job.pk)
        return job
    except TransportError as exc:
        if exc.permanent:
            return transition(
                obj=job,
                to=S.FAILED,
                transitions=Job.TRANSITIONS,
                action="job.submit_failed",
                fields={"failure_message": exc.message, "finished_at": timezone.now()},
                data={"error": exc.message},
            )
        return _requeue(job, exc.message)
    except SlurmError as exc:
        return _requeue(job, exc.message)
    return transition(
        obj=job,
        to=S.PENDING,
        transitions=Job.TRANSITIONS,
        action="job.submitted",
        fields={
            "slurm_job_id": slurm_job_id,
            "submitted_at": timezone.now(),
            "last_error": "",
            "next_attempt_at": None,
        },
        data={"slurm_job_id": slurm_job_id},
    )


def _requeue(job: Job, error: str, what: str = "") -> Job:
    """The cluster (or MLflow) could not be reached: the job waits in the hub and tries again later."""
    retry_at = timezone.now() + _backoff(job.attempts)
    what = what or f"Cluster {job.cluster.name}"
    message = f"{what} could not be reached ({error}); trying again at {retry_at:%H:%M:%S} UTC."
    return transition(
        obj=job,
        to=S.QUEUED,
        transitions=Job.TRANSITIONS,
        action="job.submit_delayed",
        fields={"next_attempt_at": retry_at, "last_error": message},
        data={"error": error},
    )

"""A job's MLflow run: created by the hub at submission, mirrored at the end, and (for
clusters whose compute nodes cannot reach the hub) fed from a file store in the job folder.

Only called from services and tasks, never inside a database transaction."""

import math
import posixpath
import tempfile
import threading
from pathlib import Path

from django.conf import settings

from apps.clusters.models import Cluster
from apps.integrations.mlflow import auth as mlflow_auth
from apps.integrations.mlflow import filestore
from apps.integrations.mlflow.base import MetricPoint, MlflowError, RunStatus
from apps.integrations.mlflow.client import TrackingClient
from apps.integrations.slurm.base import ClusterFiles, RemoteFileMissing

from . import experiments
from .models import Job

# How a finished job's state reads in MLflow.
RUN_STATUS = {
    Job.Status.COMPLETED: "FINISHED",
    Job.Status.CANCELLED: "KILLED",
}


_clients = threading.local()


#: How long the job page's live poll waits for MLflow (`latest_metrics`): the poll holds one
#: of the portal's few threads while it waits, every 5 s for each open page, so an MLflow that
#: hangs must cost a poll seconds, not the client's 30.
LIVE_TIMEOUT = 3.0


def client(*, timeout: float = 30.0) -> TrackingClient:
    """The hub's MLflow client, one per thread, settings and timeout, kept: its HTTP session
    keeps the connection alive across the few calls a submission makes (and across
    submissions)."""
    login = settings.AXLE_MLFLOW_USERNAME
    auth = (login, settings.AXLE_MLFLOW_PASSWORD) if login else None
    key = (settings.AXLE_MLFLOW_TRACKING_URI, auth, timeout)
    cached = getattr(_clients, "cached", None)
    if cached is None or key not in cached:
        # Settings change only in tests: keep the clients of the current settings alone.
        cached = {k: v for k, v in (cached or {}).items() if k[:2] == key[:2]}
        cached[key] = TrackingClient(settings.AXLE_MLFLOW_TRACKING_URI, auth=auth, timeout=timeout)
        _clients.cached = cached
    return cached[key]


def mlflow_username(job: Job) -> str:
    return f"axle-job-{job.uuid}"


def experiment_name(job: Job) -> str:
    return f"team-{job.team.name}" if job.team_id else f"user-{job.owner.get_username()}"


def hub_experiment_id(job: Job, tracking: TrackingClient | None = None) -> str:
    """The id of the job's team's (or user's) experiment: one the hub made (`experiments`)."""
    return experiments.experiment_ensure(name=experiment_name(job), tracking=tracking or client())


def mlruns_dir(job: Job) -> str:
    return posixpath.join(job.workdir, "mlruns")


def run_tags(job: Job) -> dict[str, str]:
    tags = {
        "mlflow.runName": job.name,
        "mlflow.user": job.owner.get_username(),
        "axle.job_id": str(job.uuid),
        "axle.cluster": job.cluster.name,
        "axle.cluster_username": job.cluster_username,
        "axle.script_sha256": job.script_sha256,
    }
    if job.code_repo:
        tags.update({"mlflow.source.git.repoURL": job.code_repo, "axle.code_ref": job.code_ref})
    if job.code_commit:
        tags["mlflow.source.git.commit"] = job.code_commit
    if job.image_path:
        tags.update({"axle.image": job.image_path, "axle.image_digest": job.image_digest})
    partition = (job.effective_request or {}).get("partition")
    if partition:
        tags["axle.partition"] = partition
    return tags


def start_run(job: Job) -> tuple[str, str]:
    """Create (or find again) the job's run and log its parameters; return (experiment id,
    run id)."""
    experiment_id, run_id = open_run(job)
    log_parameters(job, run_id)
    return experiment_id, run_id


def open_run(job: Job) -> tuple[str, str]:
    """Create (or find again) the job's run, with its tags in the same call; return
    (experiment id, run id). The parameters are not logged here: the batched submission
    leaves them to `finish_run` (the hub records them on the job; MLflow gets them with the
    final tags, in the same call), so a job costs MLflow one call before sbatch.

    A job on its first attempt (`attempts` is 1 once a submission took it) cannot have a run
    from an earlier attempt: the search for one is made only from the second attempt on."""
    tracking = client()
    experiment = job.mlflow_experiment_id or hub_experiment_id(job, tracking)
    run_id = job.mlflow_run_id
    if not run_id and job.attempts > 1:
        run_id = _run_of_an_earlier_attempt(tracking, experiment, job)
    run_id = run_id or tracking.create_run(experiment, job.name, run_tags(job))
    return experiment, run_id


def log_parameters(job: Job, run_id: str) -> None:
    """The job's parameters on its run (one call; logging the same values again is a no-op
    for MLflow, so a retried submission may log them twice)."""
    if job.parameters:
        client().log_params(run_id, job.parameters)


def _run_of_an_earlier_attempt(tracking: TrackingClient, experiment_id: str, job: Job) -> str:
    """The run an attempt opened before it died (before the job recorded its id): found by
    the job's id in its tags and reused, so a killed worker leaves no orphan run. Should two
    attempts have opened one each, the first is kept and the others are ended as KILLED."""
    runs = tracking.runs_tagged(experiment_id, "axle.job_id", str(job.uuid))
    live = [run_id for run_id, status in runs if status not in RunStatus.TERMINAL]
    for extra in live[1:]:
        tracking.terminate(extra, RunStatus.KILLED)
    return live[0] if live else ""


def has_own_run(job: Job) -> bool:
    """False for a sweep's wave (`Job.TRACKING_TRIALS`): its tasks log to their trials' runs."""
    return job.tracking_mode != Job.TRACKING_TRIALS


def job_environment(job: Job, experiment_id: str, run_id: str) -> dict[str, str]:
    """What the job's own `mlflow` client needs; nothing Axle-specific in the user's code.
    A sweep's wave gets only the tracking URI, at no MLflow call: each task learns its run
    and the job's login from the sweep's folder once the hub made them, after sbatch."""
    if not has_own_run(job):
        uri = job.cluster.mlflow_tracking_uri or settings.AXLE_MLFLOW_TRACKING_URI
        return {"MLFLOW_TRACKING_URI": uri, "AXLE_JOB_ID": str(job.uuid)}
    env = {"MLFLOW_RUN_ID": run_id, "MLFLOW_EXPERIMENT_ID": experiment_id, "AXLE_JOB_ID": str(job.uuid)}
    if job.cluster.tracking_mode == Cluster.TrackingMode.FILE:
        env["MLFLOW_TRACKING_URI"] = filestore.tracking_uri(mlruns_dir(job))
        env.update(filestore.ALLOW_FILE_STORE_ENV)
    else:
        env["MLFLOW_TRACKING_URI"] = job.cluster.mlflow_tracking_uri or settings.AXLE_MLFLOW_TRACKING_URI
        # A login of its own, good for its team's experiment only; deleted by finish_run.
        login = mlflow_auth.user_with_experiment(client(), mlflow_username(job), experiment_id)
        env.update(login.environment() if login else {})
    return env


def bootstrap_file_store(job: Job, experiment_id: str, run_id: str) -> dict[str, bytes]:
    return filestore.bootstrap_files(
        experiment_id,
        run_id,
        job.name,
        mlruns_dir(job),
        experiment_name=experiment_name(job),
        user_id=job.cluster_username,
    )


class _StoreReader:
    """The two callables the file-store reader needs, over the job account's `ClusterFiles`."""

    def __init__(self, files: ClusterFiles):
        self.files = files

    def read(self, path: str, offset: int) -> tuple[bytes, int]:
        return self.files.read(path, offset, 1 << 20)

    def read_whole(self, path: str) -> bytes:
        data, offset = b"", 0
        while True:
            chunk, offset = self.read(path, offset)
            if not chunk:
                return data
            data += chunk

    def list_files(self, directory: str) -> dict[str, int | None]:
        try:
            return {entry.name: entry.size for entry in self.files.list(directory)}
        except RemoteFileMissing:
            return {}  # not there (yet)


def import_file_store(job: Job, files: ClusterFiles, *, final: bool = False) -> tuple[int, dict]:
    """Pull what the job appended to its file store since the last pull and import it in
    batches. Returns (points imported, new state)."""
    remote = _StoreReader(files)
    increment = filestore.read_increment(
        run_path=filestore.run_dir(mlruns_dir(job), job.mlflow_experiment_id, job.mlflow_run_id),
        read=remote.read,
        list_files=remote.list_files,
        state=job.import_state or None,
        final=final,
    )
    if increment:
        filestore.import_into(client(), job.mlflow_run_id, increment.points, increment.params, increment.tags)
    return len(increment.points), increment.state


def import_spooled_models(job: Job, files: ClusterFiles) -> int:
    """Copy the models the job logged into its file store into the hub's run artifacts."""
    remote = _StoreReader(files)
    models = filestore.find_models(
        mlruns_dir=mlruns_dir(job),
        experiment_id=job.mlflow_experiment_id,
        run_id=job.mlflow_run_id,
        list_files=remote.list_files,
        read=remote.read,
    )
    tracking = client()
    for model in models:
        with tempfile.TemporaryDirectory(prefix="axle-spool-") as tmp:
            for relative in remote.list_files(model.artifact_dir):
                target = Path(tmp) / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(remote.read_whole(posixpath.join(model.artifact_dir, relative)))
            tracking.log_artifacts(job.mlflow_run_id, tmp, model.name if len(models) > 1 else "model")
    return len(models)


def final_metrics(job: Job) -> dict[str, float | None]:
    """The last value of each metric; NaN and infinity (not JSON) become None."""
    latest = client().get_run(job.mlflow_run_id).metrics
    return {key: (p.value if math.isfinite(p.value) else None) for key, p in sorted(latest.items())}


def latest_metrics(job: Job) -> dict[str, MetricPoint]:
    """The latest point of each of the run's metrics, in one call with a short timeout (the
    job page's live poll asks it while the run can still gain points)."""
    return client(timeout=LIVE_TIMEOUT).get_run(job.mlflow_run_id).metrics


def metric_history(job: Job, keys: list[str] | None = None) -> dict[str, list[MetricPoint]]:
    tracking = client()
    if keys is None:
        keys = sorted(tracking.get_run(job.mlflow_run_id).metrics)
    return tracking.metric_history(job.mlflow_run_id, keys)


def finish_run(job: Job) -> None:
    """Delete the job's login, then mirror its end onto its run (a sweep's wave has none)."""
    tracking = client()
    mlflow_auth.user_delete(tracking, mlflow_username(job))
    if not job.mlflow_run_id:
        return
    accounting = job.accounting or {}
    tags = {
        "axle.status": job.status,
        "axle.slurm_job_id": job.slurm_job_id,
        "axle.slurm_state": job.slurm_state,
        "axle.exit_code": "" if job.exit_code is None else str(job.exit_code),
        "axle.node_list": str(accounting.get("node_list", "")),
        "axle.elapsed_seconds": str(accounting.get("elapsed_seconds", "")),
        "axle.alloc_gpus": str(accounting.get("alloc_gpus", "")),
    }
    tags = {k: v for k, v in tags.items() if v}
    # The job's parameters go with the final tags, in the same call: a batched submission
    # does not log them (one MLflow call per job on the path to Slurm; `open_run`). Logging
    # them again when the submission did is a no-op for MLflow. Should the job itself have
    # logged one of these names with another value, MLflow refuses the batch: the job's own
    # value stands (the hub's is on the job, `Job.parameters`) and the tags go alone.
    params = {k: str(v) for k, v in (job.parameters or {}).items()}
    try:
        tracking.log_batch(job.mlflow_run_id, params=params, tags=tags)
    except MlflowError as exc:
        if not params or exc.code != "INVALID_PARAMETER_VALUE":
            raise
        tracking.set_tags(job.mlflow_run_id, tags)
    tracking.terminate(job.mlflow_run_id, RUN_STATUS.get(job.status, "FAILED"))

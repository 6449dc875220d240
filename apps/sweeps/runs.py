"""The MLflow side of a sweep's end (talks to MLflow and the cluster: never inside a
transaction)."""

import logging
import posixpath

from apps.clusters.transport import slurm_client
from apps.core.errors import Unavailable
from apps.integrations.mlflow import auth as mlflow_auth
from apps.integrations.mlflow.base import MlflowError
from apps.integrations.slurm.base import SlurmError
from apps.jobs import tracking
from apps.jobs.models import Job

from . import trialscript
from .models import Sweep, Trial

log = logging.getLogger(__name__)
S = Sweep.Status
T = Trial.State

RUN_END = {T.EARLY_STOPPED: "KILLED", T.CANCELLED: "KILLED", T.FAILED: "FAILED"}
SWEEP_RUN_END = {S.SUCCEEDED: "FINISHED", S.FAILED: "FAILED", S.STOPPED: "KILLED"}


def close_runs(sweep: Sweep) -> None:
    """End the runs the trials could not end themselves (a cancelled task never returns to
    its `mlflow.start_run`), then the sweep's own run. Best effort: MLflow being down leaves
    them RUNNING, which changes nothing the hub decides. The arrays' logins go first (each is
    deleted when its job is finalized too; a job the sweep ended may not be yet), and their
    files in the sweep's folder with them."""
    if not sweep.mlflow_run_id:
        return
    client = tracking.client()
    arrays = list(Job.objects.filter(trials__sweep=sweep, tracking_mode=Job.TRACKING_TRIALS).distinct())
    for job in arrays:
        try:  # each on its own: one that fails leaves the others to be deleted
            mlflow_auth.user_delete(client, tracking.mlflow_username(job))
        except MlflowError as exc:
            log.warning("sweep %s: deleting array %s's MLflow login: %s", sweep.uuid, job.uuid, exc)
    _remove_login_files(sweep, arrays)
    try:
        for trial in sweep.trials.filter(state__in=list(RUN_END)).exclude(mlflow_run_id=""):
            if client.get_run(trial.mlflow_run_id).status == "RUNNING":
                client.terminate(trial.mlflow_run_id, RUN_END[trial.state])
        client.set_tags(sweep.mlflow_run_id, {"axle.sweep_status": sweep.status, "axle.best": str(sweep.best_value)})
        client.terminate(sweep.mlflow_run_id, SWEEP_RUN_END[sweep.status])
    except MlflowError as exc:
        log.warning("sweep %s: ending its MLflow runs: %s", sweep.uuid, exc)


def _remove_login_files(sweep: Sweep, arrays: list[Job]) -> None:
    """The arrays' login files (`trialscript.login_name`, written by `advance._deliver_logins`)
    out of the sweep's folder, with one command: their MLflow users are deleted, and a
    password, even a dead one, is not left on the cluster. Best effort (a cluster that cannot
    be reached leaves files that no longer log anyone in)."""
    if not arrays:
        return
    paths = [posixpath.join(sweep.folder, trialscript.login_name(job.uuid)) for job in arrays]
    try:
        with slurm_client(sweep.grant) as cluster:
            result = cluster.files.run(["rm", "-f", "--", *paths])
        if result.exit_status != 0:
            log.warning(
                "sweep %s: removing the arrays' login files: %s", sweep.uuid, result.stderr.decode(errors="replace")
            )
    except (SlurmError, Unavailable) as exc:
        log.warning("sweep %s: removing the arrays' login files: %s", sweep.uuid, exc)

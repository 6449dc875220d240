"""The MLflow side of a sweep's end (talks to MLflow: never inside a transaction)."""

import logging

from apps.integrations.mlflow import auth as mlflow_auth
from apps.integrations.mlflow.base import MlflowError
from apps.jobs import tracking
from apps.jobs.models import Job

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
    deleted when its job is finalized too; a job the sweep ended may not be yet)."""
    if not sweep.mlflow_run_id:
        return
    client = tracking.client()
    for job in Job.objects.filter(trials__sweep=sweep, tracking_mode=Job.TRACKING_TRIALS).distinct():
        try:  # each on its own: one that fails leaves the others to be deleted
            mlflow_auth.user_delete(client, tracking.mlflow_username(job))
        except MlflowError as exc:
            log.warning("sweep %s: deleting array %s's MLflow login: %s", sweep.uuid, job.uuid, exc)
    try:
        for trial in sweep.trials.filter(state__in=list(RUN_END)).exclude(mlflow_run_id=""):
            if client.get_run(trial.mlflow_run_id).status == "RUNNING":
                client.terminate(trial.mlflow_run_id, RUN_END[trial.state])
        client.set_tags(sweep.mlflow_run_id, {"axle.sweep_status": sweep.status, "axle.best": str(sweep.best_value)})
        client.terminate(sweep.mlflow_run_id, SWEEP_RUN_END[sweep.status])
    except MlflowError as exc:
        log.warning("sweep %s: ending its MLflow runs: %s", sweep.uuid, exc)

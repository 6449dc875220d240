"""The MLflow side of a sweep's end (talks to MLflow: never inside a transaction)."""

import logging

from apps.integrations.mlflow.base import MlflowError
from apps.jobs import tracking

from .models import Sweep, Trial

log = logging.getLogger(__name__)
S = Sweep.Status
T = Trial.State

RUN_END = {T.EARLY_STOPPED: "KILLED", T.CANCELLED: "KILLED", T.FAILED: "FAILED"}
SWEEP_RUN_END = {S.SUCCEEDED: "FINISHED", S.FAILED: "FAILED", S.STOPPED: "KILLED"}


def close_runs(sweep: Sweep) -> None:
    """End the runs the trials could not end themselves (a cancelled task never returns to
    its `mlflow.start_run`), then the sweep's own run. Best effort: MLflow being down leaves
    them RUNNING, which changes nothing the hub decides."""
    if not sweep.mlflow_run_id:
        return
    client = tracking.client()
    try:
        for trial in sweep.trials.filter(state__in=list(RUN_END)).exclude(mlflow_run_id=""):
            if client.get_run(trial.mlflow_run_id).status == "RUNNING":
                client.terminate(trial.mlflow_run_id, RUN_END[trial.state])
        client.set_tags(sweep.mlflow_run_id, {"axle.sweep_status": sweep.status, "axle.best": str(sweep.best_value)})
        client.terminate(sweep.mlflow_run_id, SWEEP_RUN_END[sweep.status])
    except MlflowError as exc:
        log.warning("sweep %s: ending its MLflow runs: %s", sweep.uuid, exc)

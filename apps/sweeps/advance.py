"""Following a running sweep, one cycle at a time (the jobs' tracking does the Slurm side):

1. fold the array tasks the jobs poll recorded (JobTask rows) onto the trials: no Slurm call;
2. make the MLflow runs of trials that have none (children of the sweep's run), in batches,
   and write the trial → run file the tasks wait for: off the submission path;
3. read the objective of every trial that runs or just ended: one bulk-history call per
   hundred trials;
4. median stopping: ``scancel <array>_<task>`` of a losing trial through the transport;
5. ends: goal reached, too many failures, every trial done; adaptive sweeps ask Optuna for
   the next wave when there is room.

Every step is safe to run twice; the hub being down loses nothing (Slurm keeps running the
array, and the next cycle catches up from the jobs' rows and MLflow)."""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor

from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.clusters.transport import slurm_client
from apps.core.tasks import enqueue
from apps.integrations.mlflow import auth as mlflow_auth
from apps.integrations.mlflow.base import MlflowError
from apps.integrations.slurm import states
from apps.integrations.slurm.base import SlurmError
from apps.jobs import tracking
from apps.jobs.models import Job, JobTask

from . import earlystop, hyperband, services, trialscript
from .models import Sweep, Trial
from .runs import _remove_login_files, close_runs
from .spec import Spec

log = logging.getLogger(__name__)
S = Sweep.Status
T = Trial.State
RUNS_PER_CYCLE = 200
RUN_THREADS = 4
# A task in these Slurm states ran to its end; what it reported decides success.
_TASK_STATE = {
    states.PENDING: T.PENDING,
    states.RUNNING: T.RUNNING,
    states.COMPLETED: T.SUCCEEDED,
    states.FAILED: T.FAILED,
    states.CANCELLED: T.CANCELLED,
    states.TIMEOUT: T.FAILED,
    states.OUT_OF_MEMORY: T.FAILED,
    states.NODE_FAIL: T.FAILED,
}


def sweeps_tick() -> int:
    """One cycle for every running sweep."""
    count = 0
    for sweep_id in Sweep.objects.filter(status=S.RUNNING).values_list("pk", flat=True):
        try:
            sweep_advance(sweep_id=sweep_id)
        except Exception:  # one bad sweep must not stop the others
            log.exception("advancing sweep %s failed", sweep_id)
        count += 1
    return count


def sweep_advance(*, sweep_id: int) -> Sweep:
    sweep = Sweep.objects.select_related("grant__cluster", "owner", "team").get(pk=sweep_id)
    if sweep.is_terminal:
        return sweep
    spec = services.spec_of(sweep)
    _fold(sweep)
    try:
        _make_runs(sweep)
        _read_objectives(sweep, spec)
    except MlflowError as exc:
        log.warning("sweep %s: MLflow: %s", sweep.uuid, exc)
    _settle_completed(sweep, spec)
    if spec.early_stopping == "medianstop":
        _median_stop(sweep, spec)
    sweep = _decide(sweep, spec)
    if sweep.is_terminal:
        close_runs(sweep)
    return sweep


def trial_state(trial: Trial, job: Job, task_state: str | None) -> str:
    """What the trial's job and its array task say about the trial (before its metric)."""
    if task_state:
        return _TASK_STATE.get(states.hub_state(task_state) or "", trial.state)
    if job.status in (Job.Status.QUEUED, Job.Status.SUBMITTING, Job.Status.UNKNOWN, Job.Status.PENDING):
        return T.PENDING
    if job.status == Job.Status.RUNNING:
        return T.PENDING  # the array runs, this task has not started yet
    if job.status in Job.TERMINAL:
        # The whole array ended and Slurm has no row of this task: it never started
        # (the array was refused or cancelled before it got there).
        return T.CANCELLED if job.status == Job.Status.CANCELLED else T.FAILED
    return trial.state


def _fold(sweep: Sweep) -> None:
    trials = list(sweep.trials.filter(state__in=[T.PENDING, T.RUNNING]).select_related("job"))
    if not trials:
        return
    job_ids = {t.job_id for t in trials}
    tasks = {
        (row["job_id"], row["task_id"]): row
        for row in JobTask.objects.filter(job_id__in=job_ids).values("job_id", "task_id", "state", "accounting")
    }
    for trial in trials:
        row = tasks.get((trial.job_id, str(trial.task_id)))
        new = trial_state(trial, trial.job, row["state"] if row else None)
        fields = {}
        accounting = (row or {}).get("accounting") or {}
        if new == T.SUCCEEDED:
            new = T.ENDING  # until its objective is read (_settle_completed)
        if new != trial.state and new in (T.RUNNING, T.FAILED, T.CANCELLED, T.ENDING):
            fields["state"] = new
        if accounting.get("start_time") and not trial.started_at:
            fields["started_at"] = accounting["start_time"]
        if new in (T.FAILED, T.CANCELLED, T.ENDING) and not trial.finished_at:
            fields["finished_at"] = accounting.get("end_time") or timezone.now()
        if fields:
            # Ended trials (early-stopped by the hub, cancelled) keep their state.
            Trial.objects.filter(pk=trial.pk, state=trial.state).update(**fields, updated_at=timezone.now())


def _deliver_logins(sweep: Sweep, pending: list[Trial], client) -> list[Trial]:
    """Each array job whose trials get their first runs now (a wave with no run of its own,
    `Job.TRACKING_TRIALS`) gets its own MLflow login, EDIT on the sweep's experiment and
    nothing else, written to the sweep's folder with mode 0600 BEFORE the runs file: a task
    reads it once it finds its run id. Made once per job (a job with a trial that has a run
    has its login: renewing it would change the password under running tasks); deleted when
    the job is finalized (`tracking.finish_run`) and when the sweep ends (`runs.close_runs`).
    Returns the trials whose runs can be made now: a job whose login could not be written
    waits for the next cycle (no task of it can have started logging)."""
    jobs = {t.job_id: t.job for t in pending if not tracking.has_own_run(t.job) and t.job.status not in Job.TERMINAL}
    if not jobs:
        return pending
    has_runs = set(
        sweep.trials.filter(job_id__in=list(jobs)).exclude(mlflow_run_id="").values_list("job_id", flat=True)
    )
    needed = [job for pk, job in jobs.items() if pk not in has_runs]
    if not needed:
        return pending
    logins = {}
    for job in needed:
        login = mlflow_auth.user_with_experiment(client, tracking.mlflow_username(job), sweep.mlflow_experiment_id)
        if login is not None:  # None: a hub without logins (local development), nothing to hand out
            logins[job.pk] = (job, login)
    if not logins:
        return pending
    # A wave finalized, or the sweep ended, while the logins were being made: nothing would
    # delete those any more (finish_run and close_runs have run). Deleted here, not written.
    ended = set(Job.objects.filter(pk__in=list(logins), finalized_at__isnull=False).values_list("pk", flat=True))
    if Sweep.objects.filter(pk=sweep.pk, status__in=Sweep.TERMINAL).exists():
        ended = set(logins)
    for pk in ended:
        mlflow_auth.user_delete(client, logins.pop(pk)[1].username)
    failed: set[int] = set(ended)
    if not logins:
        return [t for t in pending if t.job_id not in failed]
    try:
        with slurm_client(sweep.grant) as cluster:
            for pk, (job, login) in logins.items():
                try:
                    cluster.files.write(
                        f"{sweep.folder}/{trialscript.login_name(job.uuid)}",
                        trialscript.login_file(login.username, login.password),
                        mode=0o600,
                    )
                except SlurmError as exc:
                    failed.add(pk)
                    log.warning("sweep %s: writing job %s's login failed: %s", sweep.uuid, job.uuid, exc.message)
    except SlurmError as exc:
        failed.update(logins)
        log.warning("sweep %s: writing the logins failed: %s", sweep.uuid, exc.message)
    if Sweep.objects.filter(pk=sweep.pk, status__in=Sweep.TERMINAL).exists():
        # The sweep ended while the files were being written: its end (`close_runs`) may have
        # removed the folder's login files before these landed. Take them back.
        _take_back_logins(sweep, [(job, login) for pk, (job, login) in logins.items() if pk not in failed])
        return []
    return [t for t in pending if t.job_id not in failed]


def _take_back_logins(sweep: Sweep, written: list) -> None:
    """Logins delivered as the sweep ended: their MLflow users deleted, their files removed
    (`runs._remove_login_files`, as when the sweep closes its runs)."""
    client = tracking.client()
    for _, login in written:
        mlflow_auth.user_delete(client, login.username)
    _remove_login_files(sweep, [job for job, _ in written])


def _make_runs(sweep: Sweep) -> None:
    """The sweep's parent run, then a child run for each trial in an array that has none,
    a batch per cycle; then the file that tells each task its run."""
    pending = list(
        sweep.trials.filter(mlflow_run_id="", job__isnull=False)
        .exclude(state__in=[T.CANCELLED])
        .select_related("job__team", "job__owner")
        .order_by("number")[:RUNS_PER_CYCLE]
    )
    if not pending:
        return
    client = tracking.client()
    if not sweep.mlflow_run_id:
        # The arrays' experiment: each task logs to its run as its job's own MLflow login,
        # which may edit that experiment only (tracking.job_environment).
        job = pending[0].job
        experiment_id = (
            sweep.mlflow_experiment_id or job.mlflow_experiment_id or tracking.hub_experiment_id(job, client)
        )
        run_id = client.create_run(
            experiment_id, sweep.name, {"axle.sweep_id": str(sweep.uuid), "mlflow.user": sweep.owner.get_username()}
        )
        Sweep.objects.filter(pk=sweep.pk, mlflow_run_id="").update(
            mlflow_experiment_id=experiment_id, mlflow_run_id=run_id
        )
        sweep.refresh_from_db()

    pending = _deliver_logins(sweep, pending, client)
    if not pending:
        return
    # The threads touch no model and no database: everything they need is read here.
    experiment_id, parent, sweep_uuid, owner = (
        sweep.mlflow_experiment_id,
        sweep.mlflow_run_id,
        str(sweep.uuid),
        sweep.owner.get_username(),
    )
    work = [(t.pk, t.number, {k: str(v) for k, v in t.params.items()}) for t in pending]

    def make(pk: int, number: int, params: dict[str, str]) -> tuple[int, str]:
        # A client per thread: a requests session is not shared across threads.
        own = tracking.client()
        run_id = own.create_run(
            experiment_id,
            f"{sweep.name}-trial-{number}",
            {
                "mlflow.parentRunId": parent,
                "axle.sweep_id": sweep_uuid,
                "axle.trial": str(number),
                "mlflow.user": owner,
            },
        )
        own.log_params(run_id, params)
        return pk, run_id

    # A few at a time: the tasks wait for their runs, and each run is two calls.
    failure = None
    with ThreadPoolExecutor(max_workers=RUN_THREADS) as pool:
        for future in [pool.submit(make, *item) for item in work]:
            try:
                pk, run_id = future.result()
            except MlflowError as exc:
                failure = failure or exc
                continue
            Trial.objects.filter(pk=pk, mlflow_run_id="").update(mlflow_run_id=run_id)
    runs = list(sweep.trials.exclude(mlflow_run_id="").order_by("number").values_list("number", "mlflow_run_id"))
    try:
        with slurm_client(sweep.grant) as cluster:
            cluster.files.write(f"{sweep.folder}/{trialscript.RUNS_FILE}", trialscript.runs_file(runs))
    except SlurmError as exc:
        log.warning("sweep %s: writing the runs file failed: %s", sweep.uuid, exc.message)
    if failure is not None:
        raise failure


def _read_objectives(sweep: Sweep, spec: Spec) -> None:
    """Each running or just-ended trial's objective, and its additional metrics, by Katib's
    metricStrategies: one bulk-history call per metric per hundred trials."""
    trials = list(
        sweep.trials.filter(state__in=[T.RUNNING, T.ENDING]).exclude(mlflow_run_id="").only("pk", "mlflow_run_id")
    )
    if not trials:
        return
    client = tracking.client()
    run_ids = [t.mlflow_run_id for t in trials]
    histories = client.metric_histories(run_ids, spec.metric)
    others = {name: client.metric_histories(run_ids, name) for name in spec.additional_metrics}
    for trial in trials:
        points = [(p.step, p.value) for p in histories.get(trial.mlflow_run_id, []) if math.isfinite(p.value)]
        metrics = {}
        for name, by_run in others.items():
            value = spec.metric_value(name, [(p.step, p.value) for p in by_run.get(trial.mlflow_run_id, [])])
            if value is not None and math.isfinite(value):
                metrics[name] = value
        if not points and not metrics:
            continue
        fields = {"metrics": metrics, "updated_at": timezone.now()}
        if points:
            fields.update(
                intermediate={str(step): value for step, value in points},
                objective=spec.metric_value(spec.metric, points),
            )
        Trial.objects.filter(pk=trial.pk).update(**fields)


def _settle_completed(sweep: Sweep, spec: Spec) -> None:
    """A task that ended well succeeded if it reported the objective, else it failed."""
    for trial in sweep.trials.filter(state=T.ENDING):
        if trial.objective is not None:
            Trial.objects.filter(pk=trial.pk, state=T.ENDING).update(state=T.SUCCEEDED)
        else:
            Trial.objects.filter(pk=trial.pk, state=T.ENDING).update(
                state=T.FAILED, stop_reason={"reason": f"the task ended without reporting {spec.metric}"}
            )


def _points(trial: Trial) -> list[tuple[int, float]]:
    return sorted((int(k), v) for k, v in (trial.intermediate or {}).items())


def _median_stop(sweep: Sweep, spec: Spec) -> None:
    settings = spec.early_stopping_settings
    succeeded = [_points(t) for t in sweep.trials.filter(state=T.SUCCEEDED)]
    losing: list[tuple[Trial, earlystop.Decision]] = []
    for trial in sweep.trials.filter(state=T.RUNNING).select_related("job"):
        decision = earlystop.decide(
            _points(trial),
            succeeded,
            maximize=spec.maximize,
            min_trials_required=settings["min_trials_required"],
            start_step=settings["start_step"],
        )
        if decision.stop and trial.job.slurm_job_id:
            losing.append((trial, decision))
    if not losing:
        return
    try:
        with slurm_client(sweep.grant) as client:
            for trial, decision in losing:
                # Just this task: the array's other tasks keep running.
                client.cancel(f"{trial.job.slurm_job_id}_{trial.task_id}")
                with transaction.atomic():
                    if Trial.objects.filter(pk=trial.pk, state=T.RUNNING).update(
                        state=T.EARLY_STOPPED, stop_reason=decision.as_reason(), finished_at=timezone.now()
                    ):
                        audit_record(
                            action="sweep.trial_early_stopped",
                            subject=sweep,
                            after={"trial": trial.number, "slurm_task": trial.slurm_task, **decision.as_reason()},
                        )
    except SlurmError as exc:
        log.warning("sweep %s: early stopping failed: %s", sweep.uuid, exc.message)


def _decide(sweep: Sweep, spec: Spec) -> Sweep:
    trials = list(sweep.trials.all())
    succeeded = [t for t in trials if t.state == T.SUCCEEDED]
    best = None
    for t in succeeded:
        if best is None or spec.is_better(t.objective, best):
            best = t.objective
    if best != sweep.best_value:
        Sweep.objects.filter(pk=sweep.pk).update(best_value=best)
        sweep.best_value = best
    if best is not None and spec.goal_reached(best):
        services.cancel_rest(sweep)
        return services._end(
            sweep, S.SUCCEEDED, f"The goal {spec.metric} {spec.goal:g} was reached ({best:g}).", data={"best": best}
        )
    failed = sum(1 for t in trials if t.state == T.FAILED)
    if spec.max_failed_trial_count is not None and failed > spec.max_failed_trial_count:
        services.cancel_rest(sweep)
        return services._end(
            sweep,
            S.FAILED,
            f"{failed} trials failed, more than maxFailedTrialCount ({spec.max_failed_trial_count}).",
            data={"failed": failed},
        )
    active = [t for t in trials if t.state in Trial.ACTIVE]
    brackets_done = spec.algorithm == "hyperband" and hyperband.exhausted(sweep.optuna_attrs.get(hyperband.KEY))
    if not active and (len(trials) >= sweep.max_trial_count or brackets_done):
        message = (
            f"All {len(trials)} trials ended; best {spec.metric} {best:g}."
            if best is not None
            else (f"All {len(trials)} trials ended; none reported {spec.metric}.")
        )
        return services._end(sweep, S.SUCCEEDED if best is not None else S.FAILED, message, data={"best": best})
    room = min(spec.parallel_trial_count - len(active), sweep.max_trial_count - len(trials))
    if spec.algorithm == "hyperband":
        # A rung is one array: the next one is made from the results once every trial ended.
        room = 0 if active else sweep.max_trial_count - len(trials)
    if spec.adaptive and room > 0:
        with transaction.atomic():
            locked = Sweep.objects.select_for_update().get(pk=sweep.pk)
            if locked.status == S.RUNNING and locked.trials.count() == len(trials):
                services._ask_more(locked, spec, room)
                enqueue("apps.sweeps.tasks.sweep_launch", sweep.pk)
    elif any(t.state == T.CREATED and t.job_id is None for t in trials):
        enqueue("apps.sweeps.tasks.sweep_launch", sweep.pk)  # a launch that found the cluster down
    sweep.refresh_from_db()
    return sweep

"""Sweeps on the real local cluster, through both transports: one job array per sweep, each
task with its own parameters, the throttle held, a losing trial stopped by cancelling just its
array task, and the grant's limits applied before Slurm."""

import time
from datetime import datetime

import pytest
import yaml
from django.conf import settings

from apps.audit.models import AuditEvent
from apps.clusters.transport import slurm_client
from apps.core.errors import ValidationFailed
from apps.jobs import selectors as job_selectors
from apps.jobs import services as job_services
from apps.jobs import tracking
from apps.jobs.models import Job
from apps.sweeps import advance, services
from apps.sweeps.models import Sweep, Trial
from tests.local_cluster import LOCAL_CLUSTER_MISSING, local_cluster_env, make_local_cluster, make_local_grant

pytestmark = [pytest.mark.slurm, pytest.mark.mlflow, pytest.mark.slow]

T = Trial.State


def _mlflow_up() -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(settings.AXLE_MLFLOW_TRACKING_URI + "/health", timeout=3) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(params=["ssh", "rest"])
def grant(request, alice):
    env = local_cluster_env()
    if env is None:
        pytest.skip(LOCAL_CLUSTER_MISSING)
    if not _mlflow_up():
        pytest.skip("the MLflow server does not answer")
    cluster = make_local_cluster(request.param, f"local-{request.param}")
    return make_local_grant(cluster, alice, "scientist", max_cpus=2, max_array_size=10, max_time_minutes=60)


def trial_script(python: str, *, slow_above: float = 1e9, fail: bool = False) -> str:
    """Logs loss = x at each of `steps` steps to its own MLflow run (plain REST, no mlflow
    import, logged in as MLflow's client does: with the job's own login from the environment);
    a trial whose x is above `slow_above` reports slowly, for a long time. With `fail`, the
    array's task 0 exits 3 at once."""
    return f"""#!/bin/bash
#SBATCH --partition=debug
#SBATCH --time=00:05:00
#SBATCH --mem=100M
echo "trial $AXLE_TRIAL x=${{trialParameters.x}} env=$x"
{'[ "$SLURM_ARRAY_TASK_ID" = 0 ] && exit 3' if fail else ""}
{python} - <<'PY'
import base64, json, os, time, urllib.request
x = float("${{trialParameters.x}}")
slow = x > {slow_above}
user = os.environ["MLFLOW_TRACKING_USERNAME"]
print("login", user, flush=True)
token = base64.b64encode((user + ":" + os.environ["MLFLOW_TRACKING_PASSWORD"]).encode()).decode()
headers = {{"Content-Type": "application/json", "Authorization": "Basic " + token}}
def log(step, value):
    body = json.dumps({{"run_id": os.environ["MLFLOW_RUN_ID"], "key": "loss", "value": value,
                       "timestamp": int(time.time() * 1000), "step": step}}).encode()
    request = urllib.request.Request(os.environ["MLFLOW_TRACKING_URI"] + "/api/2.0/mlflow/runs/log-metric",
                                     data=body, headers=headers)
    urllib.request.urlopen(request, timeout=10).read()
for step in range(60 if slow else 3):
    log(step, x)
    time.sleep(2 if slow else 0.2)
PY
"""


def experiment(name: str, values: list[str], *, parallel: int, algorithm: str = "grid", early=None, goal=None) -> str:
    doc = {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": name},
        "spec": {
            "objective": {"type": "minimize", "objectiveMetricName": "loss"},
            "algorithm": {"algorithmName": algorithm, "algorithmSettings": [{"name": "random_state", "value": "1"}]},
            "parallelTrialCount": parallel,
            "maxTrialCount": len(values),
            "maxFailedTrialCount": 0,
            "parameters": [{"name": "x", "parameterType": "discrete", "feasibleSpace": {"list": values}}],
            "trialTemplate": {"trialParameters": [{"name": "x", "reference": "x"}]},
        },
    }
    if early:
        doc["spec"]["earlyStopping"] = early
    if goal is not None:
        doc["spec"]["objective"]["goal"] = goal
    return yaml.safe_dump(doc)


def run(sweep: Sweep, timeout: float = 240, until=None) -> Sweep:
    """What the workers do: launch, submit the array, then poll and advance until it ends."""
    services.sweep_launch(sweep_id=sweep.pk)
    for job in {t.job for t in sweep.trials.select_related("job")}:
        job_services.job_submit(job_id=job.pk)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job_services.jobs_poll()
        advance.sweep_advance(sweep_id=sweep.pk)
        sweep.refresh_from_db()
        if sweep.is_terminal or (until and until(sweep)):
            return sweep
        time.sleep(1.5)
    raise AssertionError(f"sweep stayed {sweep.status}: {list(sweep.trials.values_list('number', 'state'))}")


def accounted_tasks(grant, slurm_job_id: str, task_ids, timeout: float = 60) -> dict[str, str]:
    """Each task's state in accounting, once slurmdbd has recorded every one of them ended
    (the hub may know a trial ended, from its own scancel, before slurmdbd does)."""
    deadline = time.monotonic() + timeout
    while True:
        with slurm_client(grant) as client:
            rows = client.accounting([slurm_job_id])
        by_task = {r.array_task_id: r.state for r in rows if r.array_task_id and r.array_task_id.isdigit()}
        ended = all(not by_task.get(str(t), "RUNNING").startswith(("RUNNING", "PENDING")) for t in task_ids)
        if ended or time.monotonic() > deadline:
            return by_task
        time.sleep(1)


def test_every_trial_runs_as_one_task_of_one_throttled_array_with_its_own_parameters(grant):
    python = local_cluster_env()["AXLE_LOCAL_PYTHON"]
    sweep = services.sweep_create(
        user=grant.user,
        cluster=grant.cluster,
        spec_text=experiment("four", ["1", "2", "3", "4"], parallel=2),
        script=trial_script(python),
    )
    sweep = run(sweep)
    assert sweep.status == Sweep.Status.SUCCEEDED, sweep.message
    trials = list(sweep.trials.select_related("job").order_by("number"))
    assert len({t.job_id for t in trials}) == 1  # ONE sbatch for the whole sweep
    job = trials[0].job
    assert job.effective_request["array"] == "0-3%2"
    for trial in trials:
        assert trial.state == T.SUCCEEDED
        # The script got its own value, by substitution and as an environment variable.
        log = job_selectors.job_log_read(job=job, stream="stdout", task=str(trial.task_id)).text
        assert log.startswith(f"trial {trial.number} x={trial.params['x']} env={trial.params['x']}"), log
        # It logged to its run in the team's experiment as the job's own login, not the hub's.
        assert f"\nlogin {tracking.mlflow_username(job)}\n" in log, log
        assert trial.objective == float(trial.params["x"])
        assert trial.intermediate == {"0": trial.objective, "1": trial.objective, "2": trial.objective}
    assert sweep.best_value == 1.0
    # The throttle held: never more than two tasks at once, as sacct recorded them.
    spans = []
    for task in job.tasks.all():
        spans.append(
            (datetime.fromisoformat(task.accounting["start_time"]), datetime.fromisoformat(task.accounting["end_time"]))
        )
    for start, _ in spans:
        assert sum(1 for s, e in spans if s <= start < e) <= 2
    # Each trial is a child run of the sweep's run, with its parameters.
    run_ = tracking.client().get_run(trials[2].mlflow_run_id)
    assert run_.tags["mlflow.parentRunId"] == sweep.mlflow_run_id
    assert run_.params == {"x": trials[2].params["x"]}


def test_a_losing_trial_is_cancelled_in_sacct_while_its_siblings_complete(grant):
    python = local_cluster_env()["AXLE_LOCAL_PYTHON"]
    early = {
        "algorithmName": "medianstop",
        "algorithmSettings": [{"name": "min_trials_required", "value": "1"}, {"name": "start_step", "value": "2"}],
    }
    sweep = services.sweep_create(
        user=grant.user,
        cluster=grant.cluster,
        spec_text=experiment("median", ["1", "9", "2"], parallel=2, early=early),
        script=trial_script(python, slow_above=5),
    )
    sweep = run(sweep)
    trials = {t.params["x"]: t for t in sweep.trials.select_related("job")}
    loser = trials["9"]
    assert loser.state == T.EARLY_STOPPED
    assert loser.stop_reason["rule"] == "medianstop" and loser.stop_reason["value"] == 9.0
    assert loser.stop_reason["median"] in (1.0, 1.5, 2.0)  # the mean of the first two values of the winners
    assert trials["1"].state == trials["2"].state == T.SUCCEEDED
    assert sweep.status == Sweep.Status.SUCCEEDED
    by_task = accounted_tasks(grant, loser.job.slurm_job_id, [t.task_id for t in trials.values()])
    assert by_task[str(loser.task_id)].startswith("CANCELLED")
    assert all(by_task[str(t.task_id)] == "COMPLETED" for x, t in trials.items() if x != "9")
    assert AuditEvent.objects.filter(action="sweep.trial_early_stopped", subject_id=str(sweep.uuid)).exists()
    # The cancelled task never ended its run; the hub did, and the sweep's run too.
    assert tracking.client().get_run(loser.mlflow_run_id).status == "KILLED"
    assert tracking.client().get_run(sweep.mlflow_run_id).status == "FINISHED"


def test_a_sweep_larger_than_the_grants_arrays_is_refused_before_slurm_with_the_numbers(grant):
    with pytest.raises(ValidationFailed) as caught:
        services.sweep_create(
            user=grant.user,
            cluster=grant.cluster,
            spec_text=experiment("big", [str(i) for i in range(12)], parallel=3),
            script=trial_script("python3"),
        )
    assert "12" in caught.value.message and "10" in caught.value.message
    assert not Sweep.objects.exists()


def test_reaching_the_goal_cancels_the_trials_still_running(grant):
    python = local_cluster_env()["AXLE_LOCAL_PYTHON"]
    sweep = services.sweep_create(
        user=grant.user,
        cluster=grant.cluster,
        # Two at once: the local node runs two tasks side by side.
        spec_text=experiment("goal", ["1", "9"], parallel=2, goal=1.5),
        script=trial_script(python, slow_above=5),
    )
    sweep = run(sweep)
    assert sweep.status == Sweep.Status.SUCCEEDED and "goal" in sweep.message
    trials = {t.params["x"]: t for t in sweep.trials.select_related("job")}
    assert trials["1"].state == T.SUCCEEDED
    assert trials["9"].state == T.CANCELLED
    by_task = accounted_tasks(grant, trials["1"].job.slurm_job_id, [t.task_id for t in trials.values()])
    assert by_task[str(trials["1"].task_id)] == "COMPLETED"
    assert by_task[str(trials["9"].task_id)].startswith("CANCELLED")


def test_more_failed_trials_than_allowed_fail_the_sweep_and_cancel_the_rest(grant):
    python = local_cluster_env()["AXLE_LOCAL_PYTHON"]
    sweep = services.sweep_create(
        user=grant.user,
        cluster=grant.cluster,
        # maxFailedTrialCount 0, one at a time: task 0 fails at once, the others would run long.
        spec_text=experiment("fails", ["7", "1", "2"], parallel=1),
        script=trial_script(python, fail=True, slow_above=0),
    )
    sweep = run(sweep, timeout=600)  # the shared cluster may hold the array in its queue a while
    assert sweep.status == Sweep.Status.FAILED
    assert "1 trials failed, more than maxFailedTrialCount (0)" in sweep.message
    trials = list(sweep.trials.select_related("job").order_by("task_id"))
    assert [t.state for t in trials] == [T.FAILED, T.CANCELLED, T.CANCELLED]  # task 0 ran first
    by_task = accounted_tasks(grant, trials[0].job.slurm_job_id, [0])
    assert by_task["0"] == "FAILED"
    # The rest were cancelled, running or pending (sacct lists them CANCELLED, or not at all).
    assert all(by_task.get(str(t.task_id), "CANCELLED").startswith("CANCELLED") for t in trials[1:])


def test_the_waves_sbatch_asks_nothing_of_mlflow_and_its_login_comes_after_in_a_0600_file(grant, monkeypatch):
    """Issue 11: a wave has no run of its own, and its tasks' MLflow login is made after
    sbatch, with the trials' runs, and handed over in the sweep's folder (mode 0600): good
    for the sweep's experiment only, and deleted when the sweep ends."""
    import uuid

    from apps.integrations.mlflow.base import MlflowError
    from apps.integrations.mlflow.client import TrackingClient
    from apps.jobs.services import submit as submitting
    from apps.sweeps import trialscript

    python = local_cluster_env()["AXLE_LOCAL_PYTHON"]
    sweep = services.sweep_create(
        user=grant.user,
        cluster=grant.cluster,
        spec_text=experiment("login", ["1", "2"], parallel=2),
        script=trial_script(python, slow_above=0),  # both report for two minutes
    )
    calls: list[str] = []
    real_request = TrackingClient._request

    def recording(self, method, path, **kwargs):
        calls.append(path)
        return real_request(self, method, path, **kwargs)

    monkeypatch.setattr(TrackingClient, "_request", recording)
    at_sbatch: list[list[str]] = []
    real_deliver = submitting._deliver

    def deliver(client, requests):
        at_sbatch.append(list(calls))
        return real_deliver(client, requests)

    monkeypatch.setattr(submitting, "_deliver", deliver)
    services.sweep_launch(sweep_id=sweep.pk)
    job = sweep.trials.first().job
    job_services.job_submit(job_id=job.pk)
    job.refresh_from_db()
    assert job.slurm_job_id, job.last_error
    assert at_sbatch == [[]]  # one sbatch, and no MLflow call before it
    assert not job.mlflow_run_id and job.tracking_mode == Job.TRACKING_TRIALS

    advance.sweep_advance(sweep_id=sweep.pk)  # the tracking cycle: runs, and the login first
    trials = list(sweep.trials.order_by("number"))
    assert all(t.mlflow_run_id for t in trials)
    path = f"{sweep.folder}/{trialscript.login_name(job.uuid)}"
    with slurm_client(grant) as client:
        mode = client.files.run(["stat", "-c", "%a", "--", path]).out.strip()
        data, _ = client.files.read(path)
    assert mode == "600"
    username, password = data.decode().split("\n")[:2]
    assert username == tracking.mlflow_username(job) and len(password) >= 32
    own = TrackingClient(settings.AXLE_MLFLOW_TRACKING_URI, auth=(username, password))
    assert own.get_run(trials[0].mlflow_run_id).status  # the sweep's experiment: its own
    sweep.refresh_from_db()
    other = tracking.client().create_experiment(f"not-the-sweeps-{uuid.uuid4().hex[:8]}")
    with pytest.raises(MlflowError) as refused:
        own.create_run(other, "intruder")
    assert refused.value.status == 403
    # The tasks log to their trials' runs with it.
    sweep = run(sweep, until=lambda s: all(t.intermediate for t in s.trials.all()))
    assert sweep.status == Sweep.Status.RUNNING
    services.sweep_stop(user=grant.user, sweep=sweep)
    with pytest.raises(MlflowError) as gone:
        own.get_run(trials[0].mlflow_run_id)
    assert gone.value.status == 401
    with slurm_client(grant) as client:  # and its file is gone from the sweep's folder
        assert client.files.run(["test", "-e", path]).exit_status == 1


def test_a_worker_killed_after_sbatch_leaves_one_array(grant, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    from apps.jobs import tasks as job_tasks
    from apps.jobs.models import Job
    from apps.jobs.services import submit as submitting

    python = local_cluster_env()["AXLE_LOCAL_PYTHON"]
    sweep = services.sweep_create(
        user=grant.user,
        cluster=grant.cluster,
        spec_text=experiment("killed", ["1", "2"], parallel=2),
        script=trial_script(python),
    )
    services.sweep_launch(sweep_id=sweep.pk)
    assert services.sweep_launch(sweep_id=sweep.pk) is None  # a second launch finds nothing to launch
    job = sweep.trials.first().job
    # Submission records a batch's answers with transition_many (issue 14): the worker dies
    # after sbatch answered, before the hub wrote the job id down.
    real_transition = submitting.transition_many

    def die_after_sbatch(**kwargs):
        if kwargs.get("action") == "job.submitted":
            raise SystemExit("worker killed")
        return real_transition(**kwargs)

    monkeypatch.setattr(submitting, "transition_many", die_after_sbatch)
    with pytest.raises(SystemExit):
        job_services.job_submit(job_id=job.pk)
    monkeypatch.setattr(submitting, "transition_many", real_transition)
    Job.objects.filter(pk=job.pk).update(updated_at=timezone.now() - timedelta(minutes=10))
    job_tasks.jobs_tick()  # the stuck submission is found by its marker, never sent again
    sweep = run(sweep)
    assert sweep.status == Sweep.Status.SUCCEEDED, sweep.message
    assert Job.objects.filter(trials__sweep=sweep).distinct().count() == 1
    with slurm_client(grant) as client:
        heads = {j.array_job_id or j.job_id for j in client.find_by_comment(job.marker)}
    assert len(heads) == 1


@pytest.mark.parametrize("grant", ["ssh"], indirect=True)
def test_the_digits_example_sweeps_the_learning_rate_and_stops_the_laggards(grant):
    from pathlib import Path

    example = Path(settings.BASE_DIR) / "examples" / "digits"
    code = f"{grant.job_root}/digits-code"
    with slurm_client(grant) as client:
        client.files.mkdir(code)
        client.files.write(f"{code}/train.py", (example / "train.py").read_bytes())
    text = (example / "sweep.yaml").read_text().replace('CODE="$HOME/axle/examples/digits"', f'CODE="{code}"')
    sweep = services.sweep_create(user=grant.user, cluster=grant.cluster, spec_text=text)
    sweep = run(sweep, timeout=400)
    trials = list(sweep.trials.all())
    first = trials[0]
    log = job_selectors.job_log_read(job=first.job, stream="stderr", task=str(first.task_id)).text[-1500:]
    assert sweep.status == Sweep.Status.SUCCEEDED, (sweep.message, [(t.state, t.stop_reason) for t in trials], log)
    assert len(trials) == 6 and all(t.state in (T.SUCCEEDED, T.EARLY_STOPPED) for t in trials)
    done = [t for t in trials if t.state == T.SUCCEEDED]
    assert sweep.best_value == max(t.objective for t in done) > 0.8
    for t in trials:
        if t.state == T.EARLY_STOPPED:
            assert t.stop_reason["value"] < t.stop_reason["median"]  # maximizing: it lagged


@pytest.mark.parametrize("grant", ["ssh"], indirect=True)
def test_an_adaptive_sweep_runs_in_waves_asking_optuna_as_results_arrive(grant):
    python = local_cluster_env()["AXLE_LOCAL_PYTHON"]
    sweep = services.sweep_create(
        user=grant.user,
        cluster=grant.cluster,
        spec_text=experiment("waves", ["1", "2", "3", "4", "5"], parallel=2, algorithm="tpe").replace(
            "maxTrialCount: 5", "maxTrialCount: 4"
        ),
        script=trial_script(python),
    )
    assert sweep.trials.count() == 2  # the first wave: parallelTrialCount trials
    deadline = time.monotonic() + 300
    while not sweep.is_terminal and time.monotonic() < deadline:
        services.sweep_launch(sweep_id=sweep.pk)  # what the queued launch task does
        for job in Job.objects.filter(trials__sweep=sweep, status=Job.Status.QUEUED).distinct():
            job_services.job_submit(job_id=job.pk)
        job_services.jobs_poll()
        advance.sweep_advance(sweep_id=sweep.pk)
        sweep.refresh_from_db()
        time.sleep(1.5)
    assert sweep.status == Sweep.Status.SUCCEEDED, sweep.message
    trials = list(sweep.trials.order_by("number"))
    assert len(trials) == 4 and all(t.state == T.SUCCEEDED for t in trials)
    assert Job.objects.filter(trials__sweep=sweep).distinct().count() >= 2  # more than one wave
    assert sweep.best_value == min(t.objective for t in trials)


@pytest.mark.parametrize("grant", ["ssh"], indirect=True)
def test_hyperband_runs_each_rung_as_one_array_with_the_rungs_budget(grant):
    python = local_cluster_env()["AXLE_LOCAL_PYTHON"]
    doc = yaml.safe_load(experiment("hb", ["1", "2", "3", "4"], parallel=2, algorithm="hyperband"))
    doc["spec"]["algorithm"]["algorithmSettings"] = [
        {"name": "resource_name", "value": "epochs"},
        {"name": "eta", "value": "2"},
        {"name": "r_l", "value": "2"},
        {"name": "random_state", "value": "5"},
    ]
    doc["spec"]["maxTrialCount"] = 5
    doc["spec"]["maxFailedTrialCount"] = 1
    doc["spec"]["parameters"].append(
        {"name": "epochs", "parameterType": "int", "feasibleSpace": {"min": "1", "max": "1"}}
    )
    doc["spec"]["trialTemplate"]["trialParameters"].append({"name": "epochs", "reference": "epochs"})
    script = trial_script(python).replace(
        'echo "trial $AXLE_TRIAL', 'echo "epochs ${trialParameters.epochs}"\necho "trial $AXLE_TRIAL'
    )
    sweep = services.sweep_create(user=grant.user, cluster=grant.cluster, spec_text=yaml.safe_dump(doc), script=script)
    deadline = time.monotonic() + 400
    while not sweep.is_terminal and time.monotonic() < deadline:
        services.sweep_launch(sweep_id=sweep.pk)
        for job in Job.objects.filter(trials__sweep=sweep, status=Job.Status.QUEUED).distinct():
            job_services.job_submit(job_id=job.pk)
        job_services.jobs_poll()
        advance.sweep_advance(sweep_id=sweep.pk)
        sweep.refresh_from_db()
        time.sleep(1.5)
    assert sweep.status == Sweep.Status.SUCCEEDED, sweep.message
    trials = list(sweep.trials.select_related("job").order_by("number"))
    # Katib's brackets for eta 2, r_l 2: 2 configurations at 1 epoch, the better one at 2, then 2 fresh at 2.
    assert [t.params["epochs"] for t in trials] == [1, 1, 2, 2, 2]
    assert len({t.job_id for t in trials}) == 3  # one array per rung
    better = min(trials[:2], key=lambda t: t.objective)
    assert (
        trials[2].params["x"] == better.params["x"]
        and trials[2].system_attrs["hyperband"]["continues"] == better.number
    )
    for trial in trials:
        log = job_selectors.job_log_read(job=trial.job, stream="stdout", task=str(trial.task_id)).text
        assert log.startswith(f"epochs {trial.params['epochs']}\n"), log

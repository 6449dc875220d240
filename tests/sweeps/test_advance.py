"""How a sweep moves on from what its trials did: states from the array's tasks, the ends
Katib defines (goal, maxFailedTrialCount, maxTrialCount), adaptive waves, and Katib's median
stopping rule exactly."""

import pytest

from apps.integrations.slurm.ssh import CommandResult
from apps.jobs.models import Job, JobTask
from apps.sweeps import advance, earlystop, runs, services
from apps.sweeps.models import Sweep, Trial

from .conftest import experiment

pytestmark = pytest.mark.django_db
T = Trial.State


def array_job(sweep, status=Job.Status.QUEUED, slurm_job_id=""):
    return Job.objects.create(
        owner=sweep.owner,
        grant=sweep.grant,
        cluster=sweep.cluster,
        name=f"{sweep.name}-0",
        script="#!/bin/bash\n",
        marker=f"m-{Job.objects.count()}",
        cluster_username="alice01",
        workdir="/w",
        stdout_path="/w/o",
        stderr_path="/w/e",
        status=status,
        slurm_job_id=slurm_job_id,
    )


def launched(sweep, status=Job.Status.QUEUED):
    job = array_job(sweep, status)
    for trial in sweep.trials.order_by("number"):
        Trial.objects.filter(pk=trial.pk).update(
            job=job, task_id=trial.number, state=T.PENDING, mlflow_run_id=f"r{trial.number}"
        )
    return job


def finish(sweep, number, state, objective=None):
    Trial.objects.filter(sweep=sweep, number=number).update(state=state, objective=objective)


def test_a_trial_that_reached_the_goal_ends_the_sweep_and_cancels_the_rest(alice, grant):
    sweep = services.sweep_create(user=alice, cluster=grant.cluster, spec_text=experiment(goal=0.1))
    job = launched(sweep)
    finish(sweep, 0, T.SUCCEEDED, 0.05)
    sweep = advance.sweep_advance(sweep_id=sweep.pk)
    assert sweep.status == Sweep.Status.SUCCEEDED
    assert "goal loss 0.1 was reached (0.05)" in sweep.message
    assert list(sweep.trials.order_by("number").values_list("state", flat=True)) == ["succeeded"] + ["cancelled"] * 3
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED  # never reaches Slurm


def test_more_failures_than_allowed_fail_the_sweep(alice, grant):
    sweep = services.sweep_create(user=alice, cluster=grant.cluster, spec_text=experiment(max_failed=1))
    launched(sweep)
    finish(sweep, 0, T.FAILED)
    assert advance.sweep_advance(sweep_id=sweep.pk).status == Sweep.Status.RUNNING  # one failure is allowed
    finish(sweep, 1, T.FAILED)
    sweep = advance.sweep_advance(sweep_id=sweep.pk)
    assert sweep.status == Sweep.Status.FAILED
    assert "2 trials failed, more than maxFailedTrialCount (1)" in sweep.message
    assert set(sweep.trials.filter(number__gte=2).values_list("state", flat=True)) == {"cancelled"}


def test_the_sweep_succeeds_when_every_trial_ended_with_the_best_recorded(alice, grant):
    sweep = services.sweep_create(user=alice, cluster=grant.cluster, spec_text=experiment(trials=3, parallel=1))
    launched(sweep)
    for number, value in enumerate([0.3, 0.1, 0.2]):
        finish(sweep, number, T.SUCCEEDED, value)
    sweep = advance.sweep_advance(sweep_id=sweep.pk)
    assert (sweep.status, sweep.best_value) == (Sweep.Status.SUCCEEDED, 0.1)


def test_array_tasks_fold_onto_their_trials(alice, grant):
    sweep = services.sweep_create(user=alice, cluster=grant.cluster, spec_text=experiment(trials=3))
    job = launched(sweep, Job.Status.RUNNING)
    JobTask.objects.create(
        job=job, task_id="0", state="RUNNING", accounting={"start_time": "2026-01-01T00:00:00+00:00"}
    )
    JobTask.objects.create(job=job, task_id="1", state="FAILED")
    JobTask.objects.create(job=job, task_id="2", state="COMPLETED")
    advance._fold(sweep)
    advance._settle_completed(sweep, services.spec_of(sweep))
    states = dict(sweep.trials.values_list("number", "state"))
    # Task 2 ended well but reported no objective: it failed, and says why.
    assert states == {0: "running", 1: "failed", 2: "failed"}
    assert sweep.trials.get(number=2).stop_reason == {"reason": "the task ended without reporting loss"}


def test_an_early_stopped_trial_keeps_its_state_when_slurm_reports_the_cancel(alice, grant):
    sweep = services.sweep_create(user=alice, cluster=grant.cluster, spec_text=experiment(trials=2))
    job = launched(sweep, Job.Status.RUNNING)
    finish(sweep, 0, T.EARLY_STOPPED)
    JobTask.objects.create(job=job, task_id="0", state="CANCELLED by 1000")
    advance._fold(sweep)
    assert sweep.trials.get(number=0).state == T.EARLY_STOPPED


def test_an_adaptive_sweep_asks_the_next_wave_from_the_results(alice, grant, django_capture_on_commit_callbacks):
    sweep = services.sweep_create(
        user=alice, cluster=grant.cluster, spec_text=experiment(algorithm="tpe", trials=5, parallel=2)
    )
    assert sweep.trials.count() == 2  # one wave of parallelTrialCount
    launched(sweep)
    finish(sweep, 0, T.SUCCEEDED, 0.4)
    with django_capture_on_commit_callbacks() as launches:
        advance.sweep_advance(sweep_id=sweep.pk)
    assert sweep.trials.count() == 3  # room for one more while trial 1 runs
    assert sweep.trials.get(number=2).state == T.CREATED and len(launches) == 1


@pytest.mark.parametrize(
    "running,maximize,stop",
    [
        ([(0, 0.9), (1, 0.8)], False, True),  # minimizing: 0.8 > median 0.5
        ([(0, 0.9), (1, 0.4)], False, False),  # the latest value counts, not the first
        ([(0, 0.9)], False, False),  # fewer than start_step values: not judged yet
        ([(0, 0.1), (1, 0.2)], True, True),  # maximizing: 0.2 < median 0.5
    ],
)
def test_median_stop_follows_katibs_rule(running, maximize, stop):
    # Two succeeded trials; the averages of their first two values are 0.4 and 0.6: median 0.5.
    succeeded = [[(0, 0.5), (1, 0.3), (2, 0.0)], [(0, 0.7), (1, 0.5), (2, 9.0)]]
    decision = earlystop.decide(running, succeeded, maximize=maximize, min_trials_required=2, start_step=2)
    assert decision.stop is stop
    if len(running) >= 2:
        assert decision.median == pytest.approx(0.5) and decision.value == running[-1][1]


def test_median_stop_waits_for_enough_succeeded_trials():
    decision = earlystop.decide(
        [(0, 9.0), (1, 9.0)], [[(0, 0.1), (1, 0.1)]], maximize=False, min_trials_required=2, start_step=2
    )
    assert decision.stop is False and decision.median is None


def test_setup_schedules_registers_the_sweeps_tracker_once():
    from django.core.management import call_command
    from django_q.models import Schedule

    call_command("setup_schedules")
    call_command("setup_schedules")
    schedule = Schedule.objects.get(name="sweeps.track")
    assert schedule.func == "apps.sweeps.tasks.sweeps_track"
    assert schedule.schedule_type == Schedule.MINUTES and schedule.minutes == 1 and schedule.repeats == -1
    assert Schedule.objects.filter(func="apps.sweeps.tasks.sweeps_track").count() == 1


def _finish_active(sweep, objective):
    for t in sweep.trials.filter(state__in=[T.CREATED, T.PENDING]):
        finish(sweep, t.number, T.SUCCEEDED, objective(t))


def test_hyperband_runs_katibs_brackets_rung_by_rung_promoting_the_best(alice, grant):
    from .test_api import hyperband_spec

    # eta 3, r_l 9: s_max 2; brackets of 9 (budget 1) -> 3 (3) -> 1 (9), 5 (3) -> 2 (9), 3 (9).
    sweep = services.sweep_create(
        user=alice, cluster=grant.cluster, spec_text=hyperband_spec(eta="3", r_l="9", trials=30, parallel=9)
    )
    rungs = []
    for _ in range(10):
        sweep.refresh_from_db()
        if sweep.is_terminal:
            break
        new = list(sweep.trials.filter(state=T.CREATED).order_by("number"))
        rungs.append([(t.params["num-epochs"], t.system_attrs["hyperband"].get("continues")) for t in new])
        launched_new = array_job(sweep)
        for t in new:
            Trial.objects.filter(pk=t.pk).update(job=launched_new, state=T.PENDING, mlflow_run_id=f"r{t.number}")
        # Smaller lr is better (minimize loss = lr): promotion must pick the smallest.
        _finish_active(sweep, lambda t: t.params["lr"])
        advance.sweep_advance(sweep_id=sweep.pk)
    assert [[budget for budget, _ in rung] for rung in rungs] == [[1] * 9, [3] * 3, [9], [3] * 5, [9] * 2, [9] * 3]
    first = list(sweep.trials.filter(number__lt=9))
    best_three = sorted(first, key=lambda t: t.params["lr"])[:3]
    assert sorted(c for _, c in rungs[1]) == sorted(t.number for t in best_three)
    promoted = sweep.trials.get(number=9 + 3)  # the one trial of the third rung
    parent = sweep.trials.get(number=promoted.system_attrs["hyperband"]["continues"])
    assert 9 <= parent.number < 12 and promoted.params["lr"] == parent.params["lr"] == best_three[0].params["lr"]
    assert sweep.status == Sweep.Status.SUCCEEDED and sweep.trials.count() == 23
    assert "hyperband" in services.spec_of(sweep).algorithm


def test_hyperband_never_promotes_a_failed_trial_and_maxtrialcount_bounds_it(alice, grant):
    from .test_api import hyperband_spec

    sweep = services.sweep_create(user=alice, cluster=grant.cluster, spec_text=hyperband_spec(trials=3))
    job = launched(sweep)
    finish(sweep, 0, T.FAILED)
    finish(sweep, 1, T.SUCCEEDED, 0.5)
    advance.sweep_advance(sweep_id=sweep.pk)
    child = sweep.trials.get(number=2)
    assert child.system_attrs["hyperband"]["continues"] == 1 and child.params["num-epochs"] == 2
    assert child.params["lr"] == sweep.trials.get(number=1).params["lr"]
    Trial.objects.filter(pk=child.pk).update(job=job, state=T.SUCCEEDED, objective=0.4, mlflow_run_id="r2")
    sweep = advance.sweep_advance(sweep_id=sweep.pk)
    assert sweep.status == Sweep.Status.SUCCEEDED and sweep.trials.count() == 3  # maxTrialCount
    assert sweep.best_value == 0.4


@pytest.mark.mlflow
def test_katibs_metric_strategies_pick_each_metrics_value_and_additional_metrics_are_read(alice, grant):
    import uuid

    import yaml

    from apps.integrations.mlflow.base import MetricPoint
    from apps.jobs import tracking

    document = yaml.safe_load(experiment(trials=2))
    document["spec"]["objective"]["additionalMetricNames"] = ["accuracy", "epoch_seconds"]
    document["spec"]["objective"]["metricStrategies"] = [
        {"name": "loss", "value": "latest"},
        {"name": "accuracy", "value": "max"},
    ]
    sweep = services.sweep_create(user=alice, cluster=grant.cluster, spec_text=yaml.safe_dump(document))
    client = tracking.client()
    experiment_id = client.ensure_experiment(f"test-strategies-{uuid.uuid4()}")
    job = launched(sweep, Job.Status.RUNNING)
    for trial in sweep.trials.all():
        run_id = client.create_run(experiment_id, f"trial-{trial.number}")
        points = []
        for step, (loss, accuracy, seconds) in enumerate([(0.5, 0.6, 3.0), (0.2, 0.9, 2.0), (0.4, 0.8, 4.0)]):
            for key, value in (("loss", loss), ("accuracy", accuracy), ("epoch_seconds", seconds)):
                points.append(MetricPoint(key, value + trial.number, 1000 + step, step))
        client.log_metrics(run_id, points)
        Trial.objects.filter(pk=trial.pk).update(state=T.RUNNING, mlflow_run_id=run_id, job=job)
    advance._read_objectives(sweep, services.spec_of(sweep))
    first = sweep.trials.get(number=0)
    assert first.objective == 0.4  # loss: latest, not the best (0.2)
    assert first.intermediate == {"0": 0.5, "1": 0.2, "2": 0.4}
    # accuracy: max; epoch_seconds: no strategy given, so the objective's direction (min).
    assert first.metrics == {"accuracy": 0.9, "epoch_seconds": 2.0}
    assert sweep.trials.get(number=1).metrics == {"accuracy": 1.9, "epoch_seconds": 3.0}


class RecordingTracking:
    """An MLflow client that records what is asked of it (the login calls go through
    `_request`, as on the real client)."""

    def __init__(self):
        self.calls = []
        self.session = type("S", (), {"auth": ("hub", "pw"), "headers": {}})()

    def _request(self, method, path, **kwargs):
        self.calls.append((method, path))

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.calls.append((name, args))
            raise AssertionError(f"unexpected MLflow call {name}")

        return call


def test_a_wave_job_has_no_run_of_its_own_and_its_finalize_deletes_only_its_login(alice, grant, monkeypatch):
    from apps.jobs import tracking
    from apps.jobs.services import job_finalize

    sweep = services.sweep_create(user=alice, cluster=grant.cluster, spec_text=experiment(trials=2, parallel=2))
    job = services.sweep_launch(sweep_id=sweep.pk)
    assert job.tracking_mode == Job.TRACKING_TRIALS and not tracking.has_own_run(job)
    # What its tasks get from the hub at submission: the tracking URI, no run, no login.
    env = tracking.job_environment(job, "", "")
    assert set(env) == {"MLFLOW_TRACKING_URI", "AXLE_JOB_ID"}
    recording = RecordingTracking()
    monkeypatch.setattr(tracking, "client", lambda **kw: recording)
    Job.objects.filter(pk=job.pk).update(status=Job.Status.COMPLETED)
    job = job_finalize(job_id=job.pk)
    assert job.finalized_at is not None and job.metrics == {}
    assert recording.calls == [("DELETE", "api/2.0/mlflow/users/delete")]


def test_finalizing_a_wave_job_is_retried_while_mlflow_is_down(alice, grant, monkeypatch):
    from apps.integrations.mlflow.base import MlflowUnavailable
    from apps.jobs import tasks as job_tasks
    from apps.jobs import tracking

    sweep = services.sweep_create(user=alice, cluster=grant.cluster, spec_text=experiment(trials=2, parallel=2))
    job = services.sweep_launch(sweep_id=sweep.pk)
    Job.objects.filter(pk=job.pk).update(status=Job.Status.FAILED)

    def down(*args, **kwargs):
        raise MlflowUnavailable("down")

    monkeypatch.setattr(tracking, "finish_run", down)
    monkeypatch.setattr(job_tasks.services, "jobs_poll", lambda: None)
    job_tasks.jobs_tick()
    job.refresh_from_db()
    assert job.finalized_at is None and "not synced yet" in job.last_error
    monkeypatch.undo()
    recording = RecordingTracking()
    monkeypatch.setattr(tracking, "client", lambda **kw: recording)
    monkeypatch.setattr(job_tasks.services, "jobs_poll", lambda: None)
    job_tasks.jobs_tick()  # the tick takes it again, although it has no run
    job.refresh_from_db()
    assert job.finalized_at is not None
    assert ("DELETE", "api/2.0/mlflow/users/delete") in recording.calls


def test_a_wave_login_made_after_the_sweep_ended_is_deleted_not_written(alice, grant, monkeypatch):
    """The sweep was stopped (close_runs ran) while the cycle made a wave's login: nothing
    would delete that login later, so it is deleted at once and never written to the folder."""
    from apps.integrations.mlflow.auth import Credential

    sweep = services.sweep_create(user=alice, cluster=grant.cluster, spec_text=experiment(trials=2, parallel=2))
    job = services.sweep_launch(sweep_id=sweep.pk)
    Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING)
    pending = list(sweep.trials.select_related("job").order_by("number"))
    made, deleted = [], []

    def user_with_experiment(client, username, experiment_id):
        made.append(username)
        Sweep.objects.filter(pk=sweep.pk).update(status=Sweep.Status.STOPPED)  # stopped meanwhile
        return Credential(username, "secret-" + username)

    def no_cluster(grant):
        raise AssertionError("the login of an ended sweep is not written")

    monkeypatch.setattr(advance.mlflow_auth, "user_with_experiment", user_with_experiment)
    monkeypatch.setattr(advance.mlflow_auth, "user_delete", lambda client, username: deleted.append(username))
    monkeypatch.setattr(advance, "slurm_client", no_cluster)

    assert advance._deliver_logins(sweep, pending, client=object()) == []
    assert made == deleted and len(made) == 1


def test_a_wave_login_written_as_the_sweep_ended_is_taken_back(alice, grant, monkeypatch):
    """The sweep ended while the login file was being written: its end may have removed the
    folder's login files before this one landed, so the cycle removes it and deletes the login."""
    from contextlib import contextmanager

    from apps.integrations.mlflow.auth import Credential

    sweep = services.sweep_create(user=alice, cluster=grant.cluster, spec_text=experiment(trials=2, parallel=2))
    job = services.sweep_launch(sweep_id=sweep.pk)
    Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING)
    pending = list(sweep.trials.select_related("job").order_by("number"))
    written, removed, deleted = [], [], []

    class Files:
        def write(self, path, data, mode):
            written.append(path)
            Sweep.objects.filter(pk=sweep.pk).update(status=Sweep.Status.STOPPED)  # ended meanwhile

        def run(self, argv):
            removed.extend(argv[3:])
            return CommandResult(0, b"", b"")

    class Cluster:
        files = Files()

    @contextmanager
    def cluster(grant):
        yield Cluster()

    monkeypatch.setattr(
        advance.mlflow_auth,
        "user_with_experiment",
        lambda client, username, eid: Credential(username, "pw-" + username),
    )
    monkeypatch.setattr(advance.mlflow_auth, "user_delete", lambda client, username: deleted.append(username))
    monkeypatch.setattr(advance, "slurm_client", cluster)
    monkeypatch.setattr(runs, "slurm_client", cluster)  # the file goes as the sweep's others do
    monkeypatch.setattr(advance.tracking, "client", lambda **kw: object())

    assert advance._deliver_logins(sweep, pending, client=object()) == []
    assert written == removed and len(written) == 1
    assert deleted == [advance.tracking.mlflow_username(job)]

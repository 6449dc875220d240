"""The sweep's best trial becomes a model version in one click: the model its own MLflow run
logged, registered here and in MLflow's registry, with lineage sweep -> job array -> version."""

import pytest

from apps.audit.models import AuditEvent
from apps.jobs.models import Job
from apps.lineage.selectors import lineage
from apps.registry.models import ModelVersion
from apps.sweeps import services
from apps.sweeps.models import Trial
from tests.registry.conftest import make_run, unique_name

from .conftest import experiment

pytestmark = [pytest.mark.django_db, pytest.mark.mlflow]
T = Trial.State


@pytest.fixture
def finished_sweep(alice, grant, tmp_path):
    from apps.jobs import tracking

    mlflow = tracking.client()
    if not mlflow.health():
        pytest.skip("the MLflow server does not answer; start it with compose/local/stack.sh up")
    experiment_id = mlflow.ensure_experiment("axle-tests-sweep-best")
    sweep = services.sweep_create(user=alice, cluster=grant.cluster, spec_text=experiment(trials=3))
    job = Job.objects.create(
        owner=alice,
        grant=grant,
        cluster=grant.cluster,
        team=sweep.team,
        name="lr-0",
        script="#!/bin/bash\n",
        marker="m-best",
        cluster_username="alice01",
        workdir="/w",
        stdout_path="/w/o",
        stderr_path="/w/e",
        status=Job.Status.COMPLETED,
    )
    for number, loss in enumerate([0.3, 0.1, 0.2]):
        run_id = make_run(mlflow, experiment_id, tmp_path, metrics={"loss": loss})
        Trial.objects.filter(sweep=sweep, number=number).update(
            job=job, task_id=number, state=T.SUCCEEDED, objective=loss, mlflow_run_id=run_id
        )
    sweep.best_value = 0.1
    return sweep


def test_one_click_registers_the_best_trials_model_with_lineage_from_the_sweep(client, alice, finished_sweep):
    client.force_login(alice)
    page = client.get(f"/sweeps/{finished_sweep.uuid}/").content.decode()
    assert 'id="register-best"' in page and 'name="trial" value="1"' in page  # the best: loss 0.1
    name = unique_name("sweep-best")
    answer = client.post("/models/register/", {"sweep": str(finished_sweep.uuid), "trial": "1", "name": name})
    assert answer.status_code == 302 and answer.url.startswith(f"/models/{name}/")
    version = ModelVersion.objects.get(model__name=name)
    best = finished_sweep.trials.get(number=1)
    assert (version.trial, version.job, version.mlflow_run_id) == (best, best.job, best.mlflow_run_id)
    assert version.metrics["loss"] == 0.1
    event = AuditEvent.objects.get(action="model_version.registered", subject_id=str(version.uuid))
    assert event.after["sweep"] == str(finished_sweep.uuid) and event.after["trial"] == 1
    # Lineage: sweep -ran_as-> the trial's job array -> the model version.
    graph = lineage(user=alice, kind="sweep", id=finished_sweep.uuid)
    assert f"job:{best.job.uuid}" in graph.nodes and f"model_version:{version.uuid}" in graph.nodes
    # The page now says where the best trial went, instead of offering the button again.
    page = client.get(f"/sweeps/{finished_sweep.uuid}/").content.decode()
    assert 'id="register-best"' not in page and f"{name} v{version.number}" in page
    # A second click gives back the same version.
    client.post("/models/register/", {"sweep": str(finished_sweep.uuid), "trial": "1", "name": name})
    assert ModelVersion.objects.filter(model__name=name).count() == 1


def test_a_second_trial_of_the_same_array_is_another_version_of_the_model(alice, finished_sweep):
    from apps.registry.services import model_version_register_trial

    name = unique_name("sweep-two")
    first = model_version_register_trial(user=alice, model_name=name, trial=finished_sweep.trials.get(number=1))
    second = model_version_register_trial(user=alice, model_name=name, trial=finished_sweep.trials.get(number=2))
    assert first.job_id == second.job_id and first.number != second.number


def test_only_a_succeeded_trial_of_a_visible_sweep_is_registered(client, alice, charlie, finished_sweep):
    Trial.objects.filter(sweep=finished_sweep, number=0).update(state=T.EARLY_STOPPED)
    client.force_login(alice)
    answer = client.post("/models/register/", {"sweep": str(finished_sweep.uuid), "trial": "0", "name": "x-model"})
    assert answer.status_code == 302 and answer.url == f"/sweeps/{finished_sweep.uuid}/"
    assert "only a succeeded trial" in client.get(answer.url).content.decode()
    client.force_login(charlie)
    client.post("/models/register/", {"sweep": str(finished_sweep.uuid), "trial": "1", "name": "y-model"})
    assert not ModelVersion.objects.exists()

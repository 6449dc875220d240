"""The hub registers versions only into a registered model it made (apps.registry.ownership):
any MLflow login may create a registered model and then manage it, so a name another login
took first is refused, against the real MLflow server."""

import pytest

from apps.audit.models import AuditEvent
from apps.core.errors import Conflict
from apps.integrations.mlflow import auth
from apps.integrations.mlflow.client import TrackingClient
from apps.jobs import tracking
from apps.registry import services
from apps.registry.models import ModelVersion
from apps.registry.ownership import TOKEN_TAG, registered_model_ensure, token

from .conftest import make_job, make_model_version, make_run, unique_name

pytestmark = pytest.mark.mlflow


@pytest.fixture
def outsider():
    """An MLflow login that is not the hub's, with no grants (as a job of another team has)."""
    hub = tracking.client()
    login = auth.user_with_permissions(hub, f"axle-job-test-{unique_name('squat')}", [])
    assert login is not None, f"MLflow at {hub.display_uri} has no login: stack.sh up starts it with one"
    yield TrackingClient(hub.base_url, auth=(login.username, login.password), timeout=30)
    auth.user_delete(hub, login.username)


def test_a_model_name_another_login_took_first_gets_no_version(alice, team, mlflow, experiment_id, tmp_path, outsider):
    name = unique_name("squatted")
    outsider.create_registered_model(name, {TOKEN_TAG: "a guess"})
    run_id = make_run(mlflow, experiment_id, tmp_path)
    job = make_job(alice, team=team, mlflow_run_id=run_id, mlflow_experiment_id=experiment_id)

    with pytest.raises(Conflict, match=f"{name} is taken in MLflow's model registry"):
        services.model_version_register(user=alice, model_name=name, job=job)

    assert mlflow.search_model_versions(name) == []
    assert not ModelVersion.objects.filter(model__name=name).exists()
    assert AuditEvent.objects.filter(action="mlflow.model_name_taken", subject_id=name).exists()


def test_the_hubs_model_carries_its_token_and_takes_every_version(alice, team, mlflow, experiment_id, tmp_path):
    name = unique_name()
    for _ in range(2):
        run_id = make_run(mlflow, experiment_id, tmp_path)
        job = make_job(alice, team=team, mlflow_run_id=run_id, mlflow_experiment_id=experiment_id)
        services.model_version_register(user=alice, model_name=name, job=job)
    assert tracking.client().registered_model_tags(name)[TOKEN_TAG] == token(name)
    assert len(mlflow.search_model_versions(name)) == 2


def test_a_model_the_hub_made_before_the_tag_existed_is_adopted(alice, team, mlflow, experiment_id, tmp_path):
    hub = tracking.client()
    name = unique_name("older")
    run_id = make_run(mlflow, experiment_id, tmp_path)
    hub.register_model(name, hub.find_logged_model(run_id), run_id)  # as the hub did before: no tag
    make_model_version(make_job(alice, team=team), alice, name=name, number=1)

    registered_model_ensure(client=hub, name=name)

    assert hub.registered_model_tags(name)[TOKEN_TAG] == token(name)
    adopted = AuditEvent.objects.get(action="mlflow.model_adopted", subject_id=name)
    assert adopted.after["name"] == name
    registered_model_ensure(client=hub, name=name)  # tagged now: found, not adopted again
    assert AuditEvent.objects.filter(action="mlflow.model_adopted", subject_id=name).count() == 1


def test_a_name_taken_before_the_hub_registered_into_it_is_not_adopted(
    alice, team, mlflow, experiment_id, tmp_path, outsider, monkeypatch
):
    """Someone made the model well before the hub's (untagged, older) first version: tagging it
    would leave its creator managing the hub's versions."""
    from apps.registry import ownership

    name = unique_name("early")
    outsider.create_registered_model(name)
    run_id = make_run(mlflow, experiment_id, tmp_path)
    hub = tracking.client()
    hub.register_model(name, hub.find_logged_model(run_id), run_id)
    make_model_version(make_job(alice, team=team), alice, name=name, number=1)
    monkeypatch.setattr(ownership, "ADOPT_WITHIN_MS", -1)  # the model older than its first version

    with pytest.raises(Conflict):
        registered_model_ensure(client=hub, name=name)
    assert TOKEN_TAG not in hub.registered_model_tags(name)


def test_an_untagged_model_the_hub_never_used_is_not_adopted(outsider, db):
    name = unique_name("untagged")
    outsider.create_registered_model(name)
    with pytest.raises(Conflict):
        registered_model_ensure(client=tracking.client(), name=name)

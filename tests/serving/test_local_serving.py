"""Governed serving against the real local model server and the real MLflow registry."""

import pytest

from apps.accounts.models import Membership
from apps.audit.selectors import audit_verify
from apps.serving import rollout, services
from apps.serving.backends import local_backend
from apps.serving.models import Deployment, Environment
from tests.factories import MembershipFactory, UserFactory

pytestmark = [pytest.mark.mlflow, pytest.mark.slow]
D = Deployment.Status


@pytest.fixture
def envs(db, team):
    staging = Environment.objects.create(name="staging", required_approvals=0)
    production = Environment.objects.create(name="production", required_approvals=1, approver_team=team)
    return staging, production


def backend(settings):
    return local_backend()


@pytest.mark.django_db
def test_an_approved_version_serves_predictions(
    alice, team, real_version, envs, serving_dir, settings, django_capture_on_commit_callbacks
):
    _, production = envs
    approver = MembershipFactory(user=UserFactory(username="ann"), team=team, role=Membership.Role.APPROVER).user
    d = services.deployment_request(user=alice, model_version=real_version, environment=production, reason="better")
    with django_capture_on_commit_callbacks(execute=True):
        services.deployment_approve(user=approver, deployment=d)
    d.refresh_from_db()
    assert d.status == D.LIVE and d.url.startswith(f"unix:{settings.AXLE_MODEL_SERVER_DIR}/")
    result = services.deployment_predict(user=alice, deployment=d, payload={"inputs": [[0.0] * 64, [0.5] * 64]})
    assert len(result["predictions"]) == 2
    assert audit_verify().ok


@pytest.mark.django_db
def test_a_worker_killed_while_deploying_converges_to_one_live_server(
    alice, real_version, envs, serving_dir, settings, monkeypatch
):
    staging, _ = envs
    d = services.deployment_request(user=alice, model_version=real_version, environment=staging, reason="try")
    assert d.status == D.APPROVED
    # The worker applies the spec, then dies before it records anything.
    real_went_live = rollout.went_live
    monkeypatch.setattr(rollout, "went_live", lambda *a, **k: (_ for _ in ()).throw(SystemExit("killed")))
    with pytest.raises(SystemExit):
        services.deployment_deploy(deployment_id=d.pk)
    monkeypatch.setattr(rollout, "went_live", real_went_live)
    d.refresh_from_db()
    assert d.status == D.DEPLOYING
    # A restarted worker reconciles, twice for good measure: one server, and the deployment live.
    services.serving_reconcile()
    services.serving_reconcile()
    d.refresh_from_db()
    assert d.status == D.LIVE
    assert backend(settings).list_names("axle") == [d.backend_name]
    assert services.deployment_predict(user=alice, deployment=d, payload={"inputs": [[0.0] * 64]})["predictions"]


@pytest.mark.django_db
def test_a_server_that_died_is_restarted_and_a_stray_one_stopped(
    alice, real_version, envs, serving_dir, settings, django_capture_on_commit_callbacks
):
    staging, _ = envs
    with django_capture_on_commit_callbacks(execute=True):
        d = services.deployment_request(user=alice, model_version=real_version, environment=staging, reason="try")
    d.refresh_from_db()
    assert d.status == D.LIVE
    local = backend(settings)
    local.stop_all()  # as if the host rebooted
    assert not local.status(d.backend_name, "axle").ready
    counts = services.serving_reconcile()
    assert counts["restarted"] == 1
    assert local.wait_ready(d.backend_name, "axle", timeout=120).ready
    services.deployment_retire(user=alice, deployment=d)
    assert local.list_names("axle") == []

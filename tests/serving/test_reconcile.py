"""The reconciler starts nothing it may not: approvals must still hold and the artifact must
still be the approved one; each start and stop it makes is audited (issue 8, finding 6)."""

import pytest

from apps.accounts.models import Membership
from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_verify
from apps.serving import services
from apps.serving.models import Deployment, Environment
from tests.factories import MembershipFactory, UserFactory
from tests.registry.conftest import make_job, make_model_version

from . import test_four_eyes as four_eyes

D = Deployment.Status
FakeBackend = four_eyes.FakeBackend
artifact = four_eyes.artifact  # the fixtures of the four-eyes tests
fake_backend = four_eyes.fake_backend


def events(deployment, action):
    return list(AuditEvent.objects.filter(subject_id=str(deployment.uuid), action=action))


@pytest.fixture
def live_in_production(alice, team, artifact, django_capture_on_commit_callbacks):
    """A production deployment approved by ann, live; then its server dies."""
    production = Environment.objects.create(name="production", required_approvals=1, approver_team=team)
    ann = MembershipFactory(user=UserFactory(username="ann"), team=team, role=Membership.Role.APPROVER)
    version = make_model_version(make_job(alice, team=team), alice, name="digits")
    artifact["sha"] = version.sha256
    d = services.deployment_request(user=alice, model_version=version, environment=production, reason="better")
    with django_capture_on_commit_callbacks(execute=True):
        services.deployment_approve(user=ann.user, deployment=d)
    d.refresh_from_db()
    assert d.status == D.LIVE
    FakeBackend.servers.clear()  # the host rebooted
    return d, ann


@pytest.mark.django_db
def test_a_live_deployment_whose_server_died_is_restarted_and_the_restart_audited(live_in_production):
    d, _ = live_in_production

    counts = services.serving_reconcile()

    assert counts["restarted"] == 1
    assert [name for _, name in FakeBackend.servers] == [d.backend_name]
    [event] = events(d, "deployment.server_restarted")
    assert event.actor is None and event.after["artifact_sha256"] == d.artifact_sha256
    assert audit_verify().ok


@pytest.mark.django_db
def test_a_server_whose_approver_lost_the_role_is_not_started_again(live_in_production):
    d, ann = live_in_production
    Membership.objects.filter(pk=ann.pk).update(role=Membership.Role.MEMBER)

    counts = services.serving_reconcile()
    d.refresh_from_db()

    assert counts == {"converged": 0, "restarted": 0, "stopped": 0, "refused": 1}
    assert FakeBackend.servers == {}
    assert d.status == D.FAILED and "approvals no longer hold" in d.last_error
    assert events(d, "deployment.failed") and not events(d, "deployment.server_restarted")


@pytest.mark.django_db
def test_a_server_whose_approval_came_from_a_deactivated_account_is_not_started_again(live_in_production):
    d, ann = live_in_production
    type(ann.user).objects.filter(pk=ann.user.pk).update(is_active=False)

    services.serving_reconcile()
    d.refresh_from_db()

    assert d.status == D.FAILED and FakeBackend.servers == {}


@pytest.mark.django_db
def test_a_server_whose_artifact_changed_is_not_started_again(live_in_production, artifact):
    d, _ = live_in_production
    artifact["sha"] = "f" * 64  # someone replaced the model's files in the artifact store

    counts = services.serving_reconcile()
    d.refresh_from_db()

    assert counts["refused"] == 1 and FakeBackend.servers == {}
    assert d.status == D.FAILED and "changed" in d.last_error and "not started again" in d.last_error


@pytest.mark.django_db
def test_a_stricter_environment_stops_a_dead_server_from_coming_back(live_in_production):
    d, _ = live_in_production
    Environment.objects.filter(pk=d.environment_id).update(required_approvals=2)

    services.serving_reconcile()
    d.refresh_from_db()

    assert d.status == D.FAILED and "1 valid of 2 needed" in d.last_error


@pytest.mark.django_db
def test_a_server_nothing_live_owns_is_stopped_and_the_stop_audited(live_in_production):
    d, _ = live_in_production
    services.serving_reconcile()  # back up
    FakeBackend.servers[("axle", "stray-0123456789")] = FakeBackend.servers[("axle", d.backend_name)]

    counts = services.serving_reconcile()

    assert counts["stopped"] == 1 and [name for _, name in FakeBackend.servers] == [d.backend_name]
    [event] = AuditEvent.objects.filter(action="deployment.server_stopped")
    assert event.after["name"] == "stray-0123456789" and event.actor is None


@pytest.mark.django_db
def test_a_deployment_left_deploying_is_resumed_only_with_valid_approvals_and_audited(live_in_production):
    d, ann = live_in_production
    # A worker died while (re)deploying it.
    Deployment.objects.filter(pk=d.pk).update(status=D.DEPLOYING)

    services.serving_reconcile()
    d.refresh_from_db()
    assert d.status == D.LIVE and events(d, "deployment.server_started")

    FakeBackend.servers.clear()
    Deployment.objects.filter(pk=d.pk).update(status=D.DEPLOYING)
    Membership.objects.filter(pk=ann.pk).delete()
    services.serving_reconcile()
    d.refresh_from_db()
    assert d.status == D.FAILED and FakeBackend.servers == {}

"""The approval workflow and its four-eyes rule, on every path a request could be approved by.
A fake backend stands in for the model server here; the real ones are tested elsewhere."""

import dataclasses
import threading
from pathlib import Path

import pytest
from django.db import DatabaseError, IntegrityError, connections, transaction

from apps.accounts.models import Membership
from apps.audit.selectors import audit_verify
from apps.integrations.serving.base import BackendStatus
from apps.serving import services
from apps.serving.backends import backend_for as real_backend_for
from apps.serving.models import Deployment, DeploymentApproval, Environment
from tests.factories import MembershipFactory, UserFactory
from tests.registry.conftest import make_job, make_model_version

D = Deployment.Status


class FakeBackend:
    """Records what it was asked to serve; ready at once."""

    servers: dict = {}

    def apply(self, spec):
        self.servers[(spec.namespace, spec.name)] = spec
        return dataclasses.replace(self.status(spec.name, spec.namespace), changed=True)

    def status(self, name, namespace):
        spec = self.servers.get((namespace, name))
        return BackendStatus(exists=spec is not None, ready=spec is not None, url=f"http://fake/{name}" if spec else "")

    def delete(self, name, namespace):
        self.servers.pop((namespace, name), None)

    def list_names(self, namespace):
        return [n for ns, n in self.servers if ns == namespace]

    def predict(self, name, namespace, payload):
        return {
            "predictions": [len(payload.get("inputs", []))],
            "served": self.servers[(namespace, name)].model_version,
        }


class ArtifactAsRecorded:
    """MLflow as the registry sees it: the artifact hashes to `sha` (downloaded, it is one
    file standing for the model; the registry's hash of it is `sha` too)."""

    def __init__(self, sha):
        self.sha = sha

    def model_sha256(self, uri):
        return self.sha

    def model_input_example(self, uri):
        return {"inputs": [[0.0, 1.0]]}

    def download_artifact(self, uri, path, dst):
        Path(dst).mkdir(parents=True)
        (Path(dst) / "MLmodel").write_text(self.sha)
        return str(dst)


def as_recorded(monkeypatch, sha):
    monkeypatch.setattr("apps.jobs.tracking.client", lambda: ArtifactAsRecorded(sha))
    monkeypatch.setattr("apps.registry.artifacts.directory_sha256", lambda path: (Path(path) / "MLmodel").read_text())


@pytest.fixture(autouse=True)
def fake_backend(monkeypatch, settings, tmp_path):
    FakeBackend.servers = {}
    settings.AXLE_SERVING_DIR = tmp_path / "serving"
    monkeypatch.setattr("apps.serving.backends.backend_for", lambda env: FakeBackend())
    return FakeBackend


@pytest.fixture
def artifact(monkeypatch):
    """MLflow's view of the artifact: unchanged unless a test says otherwise."""
    holder = {"sha": None}
    monkeypatch.setattr("apps.jobs.tracking.client", lambda: ArtifactAsRecorded(holder["sha"]))
    monkeypatch.setattr("apps.registry.artifacts.directory_sha256", lambda path: holder["sha"])
    return holder


@pytest.fixture
def approver(team):
    return MembershipFactory(user=UserFactory(username="ann"), team=team, role=Membership.Role.APPROVER).user


@pytest.fixture
def production(db):
    return Environment.objects.create(name="production", required_approvals=1, approver_role="approver")


@pytest.fixture
def staging(db):
    return Environment.objects.create(name="staging", required_approvals=0)


@pytest.fixture
def version(alice, team, artifact):
    job = make_job(alice, team=team)
    v = make_model_version(job, alice, name="digits", metrics={"val_accuracy": 0.95})
    artifact["sha"] = v.sha256
    return v


def request(user, version, env, **kw):
    return services.deployment_request(user=user, model_version=version, environment=env, reason="ship it", **kw)


@pytest.mark.django_db
class TestWorkflow:
    def test_staging_needs_no_approval_and_goes_live(self, alice, version, staging, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks(execute=True):
            d = request(alice, version, staging)
        d.refresh_from_db()
        assert d.status == D.LIVE and d.url == f"http://fake/{d.backend_name}"
        assert d.backend_name.startswith("digits-staging-") and len(d.backend_name) <= 63

    def test_production_waits_for_an_approver_then_goes_live(
        self, alice, approver, version, production, django_capture_on_commit_callbacks, mailoutbox
    ):
        with django_capture_on_commit_callbacks(execute=True):
            d = request(alice, version, production)
        assert d.status == D.REQUESTED
        assert [(m.to, m.subject.startswith("[Axle] Approval wanted")) for m in mailoutbox] == [
            (["ann@example.org"], True)
        ]
        with django_capture_on_commit_callbacks(execute=True):
            services.deployment_approve(user=approver, deployment=d, comment="metrics better than live")
        d.refresh_from_db()
        assert d.status == D.LIVE
        assert mailoutbox[-1].to == ["alice@example.org"] and "approved" in mailoutbox[-1].subject
        assert d.approvals.get().artifact_sha256 == version.sha256
        assert audit_verify().ok

    def test_a_rejection_ends_the_request(self, alice, approver, version, production):
        d = services.deployment_reject(user=approver, deployment=request(alice, version, production), comment="no")
        assert d.status == D.REJECTED

    def test_rollback_returns_to_the_previous_version_in_one_action(
        self, alice, approver, team, version, staging, django_capture_on_commit_callbacks, artifact
    ):
        with django_capture_on_commit_callbacks(execute=True):
            first = request(alice, version, staging)
        v2 = make_model_version(make_job(alice, team=team), alice, name="digits", metrics={"val_accuracy": 0.97})
        artifact["sha"] = v2.sha256
        with django_capture_on_commit_callbacks(execute=True):
            second = request(alice, v2, staging)
        first.refresh_from_db()
        second.refresh_from_db()
        assert (first.status, second.status) == (D.RETIRED, D.LIVE)
        # Each deployment has a server of its own; the replaced one is stopped.
        assert {k: v.model_version for k, v in FakeBackend.servers.items()} == {("axle", second.backend_name): "2"}
        artifact["sha"] = version.sha256
        with django_capture_on_commit_callbacks(execute=True):
            back = services.deployment_rollback(user=alice, deployment=second)
        back.refresh_from_db()
        second.refresh_from_db()
        assert (back.pk, back.status, second.status) == (first.pk, D.LIVE, D.ROLLED_BACK)
        assert {k: v.model_version for k, v in FakeBackend.servers.items()} == {("axle", first.backend_name): "1"}
        assert audit_verify().ok

    def test_predict_reaches_the_live_server(self, alice, version, staging, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks(execute=True):
            d = request(alice, version, staging)
        d.refresh_from_db()
        assert services.deployment_predict(user=alice, deployment=d, payload={"inputs": [[1], [2]]})["predictions"] == [
            2
        ]


@pytest.mark.django_db
class TestFourEyes:
    def test_the_requester_cannot_approve_through_the_api(self, api, alice, version, production):
        alice_membership = Membership.objects.get(user=alice)
        alice_membership.role = Membership.Role.ADMIN  # even an admin of the team
        alice_membership.save()
        d = request(alice, version, production)
        api.force_authenticate(alice)
        response = api.post(f"/api/v1/deployments/{d.uuid}/approve/", {"comment": "mine"}, format="json")
        assert response.status_code == 403
        assert "four eyes" in response.json()["detail"]
        assert not DeploymentApproval.objects.exists()

    def test_the_requester_cannot_approve_from_the_dashboard(self, client, alice, version, production):
        d = request(alice, version, production)
        client.force_login(alice)
        page = client.get(f"/deployments/{d.uuid}/").content.decode()
        assert "Approve</button>" not in page and "someone else must approve" in page
        client.post(f"/deployments/{d.uuid}/approve/", {"comment": "sneaky"})
        d.refresh_from_db()
        assert d.status == D.REQUESTED and not d.approvals.exists()

    def test_the_requester_cannot_approve_with_the_admins_bulk_action(self, client, version, production, team):
        boss = UserFactory(username="boss", is_staff=True, is_superuser=True)
        MembershipFactory(user=boss, team=team, role=Membership.Role.ADMIN)
        d = request(boss, version, production)
        client.force_login(boss)
        client.post("/admin/serving/deployment/", {"action": "approve_selected", "_selected_action": [d.pk]})
        d.refresh_from_db()
        assert d.status == D.REQUESTED and not d.approvals.exists()

    def test_the_database_refuses_a_self_approval_written_directly(self, alice, version, production):
        d = request(alice, version, production)
        with pytest.raises((IntegrityError, DatabaseError)), transaction.atomic():
            DeploymentApproval.objects.create(
                deployment=d, approver=alice, decision="approve", artifact_sha256=d.artifact_sha256
            )

    def test_the_requester_cannot_be_changed_afterwards(self, alice, approver, version, production):
        d = request(alice, version, production)
        with pytest.raises((IntegrityError, DatabaseError)), transaction.atomic():
            Deployment.objects.filter(pk=d.pk).update(requested_by=approver)

    def test_lowering_the_environments_bar_later_does_not_let_a_request_through(self, alice, version, production):
        d = request(alice, version, production)
        Environment.objects.filter(pk=production.pk).update(required_approvals=0)
        d.refresh_from_db()
        # Nobody approved; forcing the deploy must refuse.
        Deployment.objects.filter(pk=d.pk).update(status=D.APPROVED)
        result = services.deployment_deploy(deployment_id=d.pk)
        assert result.status == D.FAILED and "Not enough approvals" in result.last_error

    def test_a_member_without_the_approver_role_cannot_approve(self, api, alice, bob, version, production):
        d = request(alice, version, production)
        api.force_authenticate(bob)
        assert api.post(f"/api/v1/deployments/{d.uuid}/approve/", {}, format="json").status_code == 403

    def test_an_approval_is_void_when_the_artifact_changed(
        self, alice, approver, version, production, artifact, django_capture_on_commit_callbacks
    ):
        d = request(alice, version, production)
        artifact["sha"] = "f" * 64  # someone replaced the model's files in the artifact store
        with django_capture_on_commit_callbacks(execute=True):
            services.deployment_approve(user=approver, deployment=d)
        d.refresh_from_db()
        assert d.status == D.FAILED and "approval is void" in d.last_error
        assert FakeBackend.servers == {}

    def test_the_reconciler_checks_the_artifact_of_a_deployment_a_dead_worker_left_deploying(
        self, alice, approver, version, production, artifact
    ):
        d = request(alice, version, production)
        services.deployment_approve(user=approver, deployment=d)
        d.refresh_from_db()
        # The worker died right after moving it to deploying, before checking the artifact.
        services.transition(obj=d, to=D.DEPLOYING, transitions=Deployment.TRANSITIONS, action="deployment.deploying")
        artifact["sha"] = "f" * 64
        services.serving_reconcile()
        d.refresh_from_db()
        assert d.status == D.FAILED and "approval is void" in d.last_error
        assert FakeBackend.servers == {}

    def test_an_environment_without_a_kubeconfig_does_not_stop_reconciling_the_others(
        self, alice, version, staging, monkeypatch, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            d = request(alice, version, staging)
        Environment.objects.create(name="k8s", required_approvals=0, backend="kserve")
        broken = make_model_version(make_job(alice, team=version.model.team), alice, name="other")
        as_recorded(monkeypatch, broken.sha256)
        k8s = request(alice, broken, Environment.objects.get(name="k8s"))  # queued, not run yet
        services.transition(obj=k8s, to=D.DEPLOYING, transitions=Deployment.TRANSITIONS, action="deployment.deploying")
        monkeypatch.setattr(
            "apps.serving.backends.backend_for",
            lambda env: real_backend_for(env) if env.backend == "kserve" else FakeBackend(),
        )
        FakeBackend.servers.clear()  # the staging server died
        as_recorded(monkeypatch, version.sha256)  # its artifact is still the approved one
        services.serving_reconcile()
        d.refresh_from_db()
        k8s.refresh_from_db()
        assert d.status == D.LIVE and [name for _, name in FakeBackend.servers] == [d.backend_name]
        assert k8s.status == D.DEPLOYING

    def test_approving_twice_gives_one_decision(self, api, alice, approver, version, production):
        d = request(alice, version, production)
        api.force_authenticate(approver)
        first = api.post(f"/api/v1/deployments/{d.uuid}/approve/", {}, format="json")
        second = api.post(f"/api/v1/deployments/{d.uuid}/approve/", {}, format="json")
        assert first.status_code == 200 and second.status_code == 409
        assert d.approvals.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_approvers_at_once_give_exactly_one_transition(alice, team, artifact, monkeypatch):
    production = Environment.objects.create(name="production", required_approvals=1, approver_role="approver")
    approvers = [
        MembershipFactory(user=UserFactory(username=f"a{i}"), team=team, role="approver").user for i in range(4)
    ]
    version = make_model_version(make_job(alice, team=team), alice, name="digits")
    artifact["sha"] = version.sha256
    d = request(alice, version, production)
    outcomes = []

    def approve(user):
        try:
            services.deployment_approve(user=user, deployment=Deployment.objects.get(pk=d.pk))
            outcomes.append("ok")
        except Exception as exc:  # Conflict for the losers
            outcomes.append(type(exc).__name__)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=approve, args=(u,)) for u in approvers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    from apps.audit.models import AuditEvent

    assert outcomes.count("ok") == 1 and set(outcomes) <= {"ok", "Conflict"}
    assert AuditEvent.objects.filter(action="deployment.approved", subject_id=str(d.uuid)).count() == 1
    assert audit_verify().ok


@pytest.mark.django_db
def test_lineage_reaches_from_the_dataset_side_to_the_deployment(
    api, alice, version, staging, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        d = request(alice, version, staging)
    api.force_authenticate(alice)
    graph = api.get("/api/v1/lineage/", {"kind": "model_version", "id": str(version.uuid)}).json()
    assert f"deployment:{d.uuid}" in {n["id"] for n in graph["nodes"]}
    assert {
        "source": f"model_version:{version.uuid}",
        "target": f"deployment:{d.uuid}",
        "relation": "deployed_as",
    } in graph["edges"]
    back = api.get("/api/v1/lineage/", {"kind": "deployment", "id": str(d.uuid)}).json()
    assert f"job:{version.job.uuid}" in {n["id"] for n in back["nodes"]}


@pytest.mark.django_db
def test_rotating_keys_re_encrypts_environment_kubeconfigs(settings, capsys):
    from cryptography.fernet import Fernet
    from django.core.management import call_command

    from apps.core import crypto

    old, new = settings.AXLE_ENCRYPTION_KEYS[0], Fernet.generate_key().decode()
    env = Environment.objects.create(
        name="k8s", backend="kserve", kubeconfig_encrypted=crypto.encrypt("apiVersion: v1")
    )
    settings.AXLE_ENCRYPTION_KEYS = [new, old]
    crypto.reset_cache()
    try:
        call_command("rotate_secrets")
        settings.AXLE_ENCRYPTION_KEYS = [new]
        crypto.reset_cache()
        env.refresh_from_db()
        assert crypto.decrypt(env.kubeconfig_encrypted) == "apiVersion: v1"
    finally:
        settings.AXLE_ENCRYPTION_KEYS = [old]
        crypto.reset_cache()


@pytest.mark.django_db
def test_a_repository_url_with_a_token_is_refused(alice, team):
    from apps.core.errors import ValidationFailed
    from apps.jobs import services as job_services
    from tests.factories import ClusterFactory, ClusterGrantFactory

    cluster = ClusterFactory(name="hpc", job_root="/scratch/{username}/axle")
    ClusterGrantFactory(user=alice, cluster=cluster, allowed_partitions=["debug"])
    with pytest.raises(ValidationFailed, match="contains a user name or token"):
        job_services.job_create(
            user=alice,
            cluster=cluster,
            name="x",
            script="#!/bin/bash\nhostname\n",
            code={"repo": "https://bob:ghp_secret@git.example.org/x.git", "ref": "main"},
        )


@pytest.mark.django_db
def test_deployment_lists_and_the_inbox_cost_the_same_queries_for_more_requests(
    client, api, alice, approver, team, production, artifact
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def add(n):
        for _ in range(n):
            v = make_model_version(make_job(alice, team=team), alice, name="digits")
            request(alice, v, production)

    def count(fn):
        with CaptureQueriesContext(connection) as ctx:
            assert fn().status_code == 200
        return len(ctx.captured_queries)

    client.force_login(approver)
    api.force_authenticate(approver)
    pages = (
        lambda: client.get("/deployments/"),
        lambda: api.get("/api/v1/deployments/"),
        lambda: client.get("/deployments/inbox/"),
    )
    add(2)
    before = [count(p) for p in pages]
    add(6)
    after = [count(p) for p in pages]
    assert after == before

# ruff: noqa: F811  (pytest fixtures imported from the four-eyes tests, used as arguments)
"""What an approver and a requester see around a request: the version already live is
refused, a request can be withdrawn, the nav counts what waits, a decision leads to the next
request, and the deployment page follows the request's state without a reload."""

import html
import json
import re

import pytest
from django.core.cache import cache
from django.test import Client
from rest_framework.test import APIClient

from apps.accounts.models import Membership
from apps.audit.models import AuditEvent
from apps.core.errors import Conflict, PermissionDenied
from apps.serving import selectors, services
from apps.serving.models import Deployment, Environment
from tests.factories import MembershipFactory, TeamFactory, UserFactory
from tests.registry.conftest import make_job, make_model_version
from tests.serving.test_four_eyes import (  # noqa: F401  (the fake backend and MLflow's view of the artifact)
    approver,
    artifact,
    fake_backend,
    production,
    request,
    staging,
    version,
)

D = Deployment.Status
pytestmark = pytest.mark.django_db


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def go_live(d):
    Deployment.objects.filter(pk=d.pk).update(status=D.LIVE, url="http://fake/x")
    d.refresh_from_db()
    return d


@pytest.fixture(autouse=True)
def _no_cached_examples():
    cache.clear()


class TestAlreadyLive:
    def test_it_refuses_a_request_for_the_version_live_in_that_environment(self, alice, version, production):
        go_live(request(alice, version, production))
        with pytest.raises(Conflict, match=r"digits v1 is already live in production \(since \d{4}-"):
            request(alice, version, production)

    def test_the_same_version_may_still_go_to_another_environment(self, alice, version, production):
        go_live(request(alice, version, production))
        other = Environment.objects.create(name="canary-zone", required_approvals=1)
        assert request(alice, version, other).status == D.REQUESTED

    def test_a_newer_version_may_replace_the_live_one(self, alice, team, version, production):
        live = go_live(request(alice, version, production))
        newer = make_model_version(make_job(alice, team=team), alice, name="digits")
        assert request(alice, newer, production).replaces == live

    def test_the_api_answers_409_with_the_reason(self, alice, version, production):
        go_live(request(alice, version, production))
        api = APIClient()
        api.force_authenticate(alice)
        body = {"model": "digits", "version": 1, "environment": "production", "reason": "again"}
        resp = api.post("/api/v1/deployments/", body, format="json")
        assert resp.status_code == 409
        assert "already live in production" in resp.json()["detail"]

    def test_the_page_says_so_inline(self, alice, version, production):
        go_live(request(alice, version, production))
        resp = logged_in(alice).post(
            "/deployments/new/", {"model": "digits", "version": 1, "environment": "production", "reason": "again"}
        )
        assert resp.status_code == 200 and "already live in production" in resp.content.decode()
        assert Deployment.objects.count() == 1


class TestWithdraw:
    def test_the_requester_withdraws_and_it_is_audited(self, alice, approver, version, production):
        d = request(alice, version, production)
        assert selectors.waiting_count(user=approver) == 1
        services.deployment_withdraw(user=alice, deployment=d)
        d.refresh_from_db()
        assert d.status == D.WITHDRAWN
        event = AuditEvent.objects.filter(action="deployment.withdrawn").get()
        assert event.actor_display == "alice" or event.actor_id == alice.pk
        assert event.before == {"status": "requested"} and event.after["status"] == "withdrawn"
        assert selectors.waiting_count(user=approver) == 0 and selectors.inbox(user=approver) == []

    def test_nobody_else_can_withdraw(self, alice, bob, approver, version, production):
        d = request(alice, version, production)
        for other in (bob, approver):
            with pytest.raises(PermissionDenied, match="Only the requester"):
                services.deployment_withdraw(user=other, deployment=d)
        assert Deployment.objects.get().status == D.REQUESTED

    def test_a_decided_request_cannot_be_withdrawn(self, alice, approver, version, production):
        d = request(alice, version, production)
        services.deployment_reject(user=approver, deployment=d, comment="no")
        d.refresh_from_db()
        with pytest.raises(Conflict, match="rejected, so it can no longer be withdrawn"):
            services.deployment_withdraw(user=alice, deployment=d)

    def test_a_withdrawn_request_can_be_made_again(self, alice, version, production):
        services.deployment_withdraw(user=alice, deployment=request(alice, version, production))
        assert request(alice, version, production).status == D.REQUESTED

    def test_the_api_and_the_page_withdraw(self, alice, bob, version, production):
        d = request(alice, version, production)
        api = APIClient()
        api.force_authenticate(bob)
        assert api.post(f"/api/v1/deployments/{d.uuid}/withdraw/").status_code == 403
        api.force_authenticate(alice)
        resp = api.post(f"/api/v1/deployments/{d.uuid}/withdraw/")
        assert resp.status_code == 200 and resp.json()["status"] == "withdrawn"
        assert api.post(f"/api/v1/deployments/{d.uuid}/withdraw/").status_code == 409

        d2 = request(alice, version, production)
        page = logged_in(alice).get(f"/deployments/{d2.uuid}/").content.decode()
        assert "Withdraw request" in page
        assert "Withdraw request" not in logged_in(bob).get(f"/deployments/{d2.uuid}/").content.decode()
        resp = logged_in(alice).post(f"/deployments/{d2.uuid}/withdraw/", follow=True)
        assert "Request withdrawn" in resp.content.decode()
        d2.refresh_from_db()
        assert d2.status == D.WITHDRAWN


class TestBadge:
    def test_the_count_is_the_inbox_for_every_persona(self, alice, bob, approver, team, version, production, staging):
        other_team = TeamFactory(name="audio")
        strict = Environment.objects.create(name="strict", required_approvals=1, approver_role="admin")
        elsewhere = Environment.objects.create(name="elsewhere", required_approvals=1, approver_team=other_team)
        outsider = MembershipFactory(user=UserFactory(username="olga"), team=other_team, role="approver").user
        lead = MembershipFactory(user=UserFactory(username="lea"), team=team, role=Membership.Role.ADMIN).user
        for env in (production, strict, elsewhere):
            request(alice, version, env)
        services.deployment_approve(user=lead, deployment=Deployment.objects.get(environment=strict))
        for user in (alice, bob, approver, outsider, lead):
            assert selectors.waiting_count(user=user) == len(selectors.inbox(user=user)), user
        assert selectors.waiting_count(user=approver) == 1  # production; strict wants an admin
        assert selectors.waiting_count(user=outsider) == 1  # elsewhere is hers to decide
        assert selectors.waiting_count(user=lead) == 1  # production; strict already decided by her
        assert selectors.waiting_count(user=alice) == 0  # her own requests

    def test_the_nav_shows_it_with_one_query(self, alice, approver, version, production, django_assert_num_queries):
        request(alice, version, production)
        page = logged_in(approver).get("/jobs/").content.decode()
        badge = re.search(r'id="approvals-badge"[^>]*>(\d+)</a>', page)
        assert badge and badge.group(1) == "1"
        assert 'id="approvals-badge"' not in logged_in(alice).get("/jobs/").content.decode()
        with django_assert_num_queries(1):
            assert selectors.waiting_count(user=approver) == 1

    def test_the_home_page_counts_once_for_its_button_and_the_badge(
        self, alice, approver, version, production, django_assert_max_num_queries
    ):
        request(alice, version, production)
        client = logged_in(approver)
        with django_assert_max_num_queries(20) as queries:
            page = client.get("/").content.decode()
        assert re.search(r'id="approvals-badge"[^>]*>1</a>', page) and "1 approval waiting" in page
        counts = [
            q
            for q in queries.captured_queries
            if q["sql"].startswith('SELECT COUNT(*) AS "__count" FROM "serving_deployment"')
        ]
        assert len(counts) == 1


class TestNextRequest:
    def test_after_a_decision_the_approver_lands_on_the_next(self, alice, approver, team, version, production):
        first = request(alice, version, production)
        newer = make_model_version(make_job(alice, team=team), alice, name="digits")
        second = request(alice, newer, production)
        client = logged_in(approver)
        resp = client.post(f"/deployments/{first.uuid}/approve/", {"comment": "fine"})
        assert resp.status_code == 302 and resp["Location"] == f"/deployments/{second.uuid}/"
        page = client.get(resp["Location"]).content.decode()
        assert "Next waiting" in page and "Approve" in page
        resp = client.post(f"/deployments/{second.uuid}/reject/", {"comment": "one is enough"})
        assert resp["Location"] == f"/deployments/{second.uuid}/"
        assert "Nothing else waits" in client.get(resp["Location"]).content.decode()


class TestLivePage:
    def test_the_page_answers_204_while_nothing_changed_and_the_new_state_when_it_did(
        self, alice, approver, version, production, django_capture_on_commit_callbacks
    ):
        d = request(alice, version, production)
        client = logged_in(alice)
        page = client.get(f"/deployments/{d.uuid}/").content.decode()
        state = re.search(r'data-state="([^"]+)"', page).group(1)
        assert 'hx-trigger="every 3s"' in page and "Try it" not in page
        poll = f"/deployments/{d.uuid}/?state={state}"
        assert client.get(poll, HTTP_HX_REQUEST="true").status_code == 204

        with django_capture_on_commit_callbacks(execute=True):
            services.deployment_approve(user=approver, deployment=d, comment="ok")
        resp = client.get(poll, HTTP_HX_REQUEST="true")
        fragment = resp.content.decode()
        assert resp.status_code == 200 and "<html" not in fragment
        assert 'data-status="live"' in fragment and 'id="try-it"' in fragment
        assert "Roll back" not in fragment  # nothing was live before
        timeline = fragment.split('id="timeline"')[1]
        assert "deployment.approved" in timeline and "deployment.live" in timeline
        # Try it is pre-filled from the model's own example (here MLflow's stand-in's)
        textarea = re.search(r'<textarea id="payload"[^>]*>(.*?)</textarea>', fragment, re.S).group(1)
        assert json.loads(html.unescape(textarea)) == {"inputs": [[0.0, 1.0]]}

    def test_a_terminal_request_stops_asking(self, alice, version, production):
        d = request(alice, version, production)
        services.deployment_withdraw(user=alice, deployment=d)
        page = logged_in(alice).get(f"/deployments/{d.uuid}/").content.decode()
        assert "hx-trigger" not in page.split('id="deployment"')[1].split(">")[0]


class TestRegistryMarkers:
    def test_versions_show_where_they_are_live(self, alice, team, version, production, staging):
        go_live(request(alice, version, production))
        newer = make_model_version(make_job(alice, team=team), alice, name="digits")
        go_live(request(alice, newer, Environment.objects.create(name="qa", required_approvals=1)))
        client = logged_in(alice)
        detail = client.get("/models/digits/").content.decode()
        v1 = detail.split('id="v1"')[1].split("</tr>")[0]
        v2 = detail.split('id="v2"')[1].split("</tr>")[0]
        assert ">production</a>" in v1 and ">qa</a>" not in v1
        assert ">qa</a>" in v2 and ">production</a>" not in v2
        listing = client.get("/models/").content.decode()
        assert "v1 in production" in listing and "v2 in qa" in listing

    def test_the_api_says_where_and_offers_the_example(self, alice, version, production):
        go_live(request(alice, version, production))
        api = APIClient()
        api.force_authenticate(alice)
        body = api.get("/api/v1/models/digits/versions/1/").json()
        assert body["live_in"] == ["production"]
        assert body["input_example"] == {"inputs": [[0.0, 1.0]]}

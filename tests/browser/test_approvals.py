"""The approver's journey, without a reload: a request arrives (the nav badge counts it), the
approver opens it, approves, and lands on the next request; meanwhile the requester's open
deployment page goes live by itself, with "Try it" pre-filled from the model's own
input_example, and a prediction works."""

import json

import pytest

from apps.accounts.models import Membership
from apps.serving import services
from apps.serving.models import Deployment, Environment
from tests.factories import PASSWORD, MembershipFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.mlflow, pytest.mark.slow]


def login(page, username):
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/")


def test_the_approver_works_through_requests_and_the_requester_sees_it_go_live(
    browser, live_server, page, transactional_db, alice, team, real_version, serving_dir
):
    production = Environment.objects.create(name="production", required_approvals=1, approver_team=team)
    staging = Environment.objects.create(name="staging", required_approvals=1, approver_team=team)
    MembershipFactory(user=UserFactory(username="ann"), team=team, role=Membership.Role.APPROVER)
    first = services.deployment_request(
        user=alice, model_version=real_version, environment=production, reason="val_accuracy 0.97"
    )
    second = services.deployment_request(
        user=alice, model_version=real_version, environment=staging, reason="for the QA team"
    )

    # alice watches her production request; the page must never reload
    login(page, "alice")
    page.goto(f"/deployments/{first.uuid}/")
    assert page.locator("[data-status]").first.get_attribute("data-status") == "requested"
    assert page.locator("#try-it").count() == 0
    page.evaluate("window.__sameDocument = true")

    # ann, in her own browser, sees two requests waiting
    ann_context = browser.new_context(base_url=live_server.url, viewport={"width": 1366, "height": 800})
    ann_page = ann_context.new_page()
    ann_page.set_default_timeout(15000)
    try:
        login(ann_page, "ann")
        assert ann_page.locator("#approvals-badge").inner_text() == "2"
        ann_page.click("#approvals-badge")
        ann_page.wait_for_url("**/deployments/inbox/")
        ann_page.click(f"a[href='/deployments/{first.uuid}/']")
        ann_page.wait_for_url(f"**/deployments/{first.uuid}/")
        ann_page.fill("input[name=comment]", "metrics and lineage checked")
        # (the test settings run tasks at once: the approval returns once the server started)
        ann_page.click("button:has-text('Approve')", timeout=240000)
        # ...and lands on the next one, the staging request
        ann_page.wait_for_url(f"**/deployments/{second.uuid}/", timeout=240000)
        assert "Next waiting" in ann_page.locator(".messages").inner_text()
        assert ann_page.locator("#approvals-badge").inner_text() == "1"
        assert ann_page.locator("button:has-text('Approve')").count() == 1
    finally:
        ann_context.close()

    # alice's page turns live by itself, Try it pre-filled from the model's input_example
    page.wait_for_selector("#try-it", timeout=240000)
    assert page.evaluate("window.__sameDocument") is True
    assert page.locator("[data-status]").first.get_attribute("data-status") == "live"
    assert "deployment.live" in page.locator("#timeline").inner_text()
    example = json.loads(page.input_value("#payload"))
    assert len(example["inputs"]) == 2 and len(example["inputs"][0]) == 64
    page.click("text=Predict")
    page.wait_for_selector("[data-testid=prediction]", timeout=30000)
    predictions = json.loads(page.locator("[data-testid=prediction]").inner_text())["predictions"]
    assert len(predictions) == 2 and all(0 <= p <= 9 for p in predictions)
    assert Deployment.objects.get(pk=first.pk).status == Deployment.Status.LIVE
    assert Deployment.objects.get(pk=second.pk).status == Deployment.Status.REQUESTED


@pytest.mark.django_db(transaction=True)
def test_the_browser_checks_a_dataset_name_with_its_pattern(page, alice):
    login(page, "alice")
    page.goto("/datasets/")
    name = page.locator("#id_name")
    name.fill("bad name!")
    assert page.evaluate("document.querySelector('#id_name').validity.patternMismatch") is True
    name.fill("imagenet-subset_2")
    assert page.evaluate("document.querySelector('#id_name').validity.valid") is True
    page.goto("/models/")
    page.fill("#id_name", "-starts-with-dash")
    assert page.evaluate("document.querySelector('#id_name').validity.patternMismatch") is True

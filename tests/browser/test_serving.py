import pytest

from apps.accounts.models import Membership
from apps.serving.models import Deployment, Environment
from tests.factories import PASSWORD, MembershipFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.mlflow, pytest.mark.slow]


def login(page, username):
    page.context.clear_cookies()
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/")


def test_a_production_deployment_needs_someone_else_and_then_predicts(
    page, transactional_db, alice, team, real_version, serving_dir
):
    Environment.objects.create(name="production", required_approvals=1, approver_team=team)
    MembershipFactory(user=UserFactory(username="ann"), team=team, role=Membership.Role.APPROVER)

    # alice asks for production from the model's page
    login(page, "alice")
    page.goto(f"/models/{real_version.model.name}/")
    page.click(f"a[href*='/deployments/new/?model={real_version.model.name}']")
    page.select_option("#id_environment", "production")
    page.fill("#id_reason", "val_accuracy 0.97, better than what runs")
    page.click("text=Request deployment")
    page.wait_for_url("**/deployments/*/")
    assert page.locator("[data-status]").first.get_attribute("data-status") == "requested"
    assert "someone else must approve" in page.locator("#why-not").inner_text()
    assert page.locator("button", has_text="Approve").count() == 0
    deployment_url = page.url

    # ann approves from her inbox; the model server starts
    login(page, "ann")
    page.goto("/deployments/inbox/")
    card = page.locator("section.card", has_text=real_version.model.name)
    assert "val_accuracy" in card.inner_text() and "better than what runs" in card.inner_text()
    card.locator("input[name=comment]").fill("checked the metrics and lineage")
    # The test settings run tasks at once: the approval answers once the model server started.
    card.locator("button", has_text="Approve").click(timeout=240000)
    page.wait_for_url("**/deployments/*/", timeout=180000)
    page.wait_for_selector("[data-status=live]", timeout=180000)

    # alice tries it
    login(page, "alice")
    page.goto(deployment_url)
    page.fill("#payload", '{"inputs": [[' + ",".join(["0.0"] * 64) + "]]}")
    page.click("text=Predict")
    page.wait_for_selector("[data-testid=prediction]", timeout=30000)
    assert '"predictions"' in page.locator("[data-testid=prediction]").inner_text()
    assert Deployment.objects.get().status == Deployment.Status.LIVE

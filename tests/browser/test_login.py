import pytest
from django.core.management import call_command

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def demo(transactional_db, monkeypatch):
    monkeypatch.setenv("AXLE_DEMO_PASSWORD", "demo-pass-123")
    call_command("seed_demo")


def test_a_scientist_logs_in_and_sees_the_dashboard(page, demo):
    page.goto("/jobs/")
    assert "/login/" in page.url  # sent to log in first
    page.fill("#id_username", "scientist")
    page.fill("#id_password", "demo-pass-123")
    page.click("button[type=submit]")
    page.wait_for_url("**/jobs/")
    assert page.locator("h1").inner_text() == "Jobs"
    page.click("text=Axle")
    assert "Welcome, scientist" in page.locator("h1").inner_text()
    assert "vision" in page.locator("main").inner_text()
    nav = page.locator("nav.mainnav").inner_text()
    for item in ("Jobs", "Datasets", "Models", "Deployments", "Clusters"):
        assert item in nav
    assert "Audit" not in nav  # scientist is not an administrator


def test_a_wrong_password_is_explained_on_the_form(page, demo):
    page.goto("/login/")
    page.fill("#id_username", "scientist")
    page.fill("#id_password", "not-it")
    page.click("button[type=submit]")
    assert "correct username and password" in page.locator("[role=alert]").inner_text()


def test_an_admin_creates_a_token_and_reads_the_audit_trail(page, demo):
    page.goto("/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "demo-pass-123")
    page.click("button[type=submit]")
    page.click("text=API tokens")
    page.fill("#token-name", "laptop")
    page.click("text=Create token")
    key = page.locator("#new-token").inner_text().strip()
    assert key.startswith("axle_")
    page.click("nav.mainnav >> text=Audit")
    page.fill("#f-action", "token.")
    page.click("text=Filter")
    table = page.locator("table.audit").inner_text()
    assert "token.created" in table and "laptop" in table and key not in table

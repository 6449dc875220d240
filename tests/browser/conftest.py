import os
import shutil
import tempfile

import pytest

from tests.identity.servers import ldap_directory, ldap_settings  # noqa: F401  (shared fixtures)
from tests.registry.conftest import tracking_uri  # noqa: F401  (shared fixtures)
from tests.serving.conftest import real_version, serving_dir, trained_model  # noqa: F401  (shared fixtures)


def _chromium() -> str | None:
    path = os.environ.get("AXLE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    return path if os.path.exists(path) else None


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright (Playwright cannot download a browser here)."""
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    if executable is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium is not installed; ./dev test installs Debian's chromium package")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    profile = tempfile.mkdtemp(prefix="axle-chromium-")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=executable,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1366, "height": 800})
    page = context.new_page()
    page.set_default_timeout(15000)
    yield page
    if os.environ.get("AXLE_SCREENSHOTS"):
        page.screenshot(path=os.path.join(os.environ["AXLE_SCREENSHOTS"], "last.png"), full_page=True)
    context.close()

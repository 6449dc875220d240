"""Signing in through the browser with both directories, against real servers: panva's
oidc-provider (OpenID Certified) run by Node, and OpenLDAP's slapd (tests/identity/servers.py).
Failures — a tampered ID token, a wrong state, an expired token, a disabled user — end on a
clear page and in the audit trail; a group taken away moves the role at the next sign-in."""

import http.server
import json
import threading
import time
import urllib.request

import pytest

from apps.accounts.models import Membership, User
from apps.audit.models import AuditEvent
from tests.identity.servers import oidc_configure, start_provider

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="session")
def provider(live_server):
    started = start_provider(f"{live_server.url}/oidc/callback/")
    yield started
    started.process.terminate()
    started.process.wait(timeout=10)


@pytest.fixture
def oidc(settings, provider, transactional_db):
    oidc_configure(settings, provider)
    return provider


def _roles(username: str) -> dict[str, str]:
    return dict(Membership.objects.filter(user__username=username).values_list("team__name", "role"))


def _sign_in_with_provider(page, username: str, password: str) -> None:
    page.goto("/login/")
    page.click("#sso-oidc")
    page.wait_for_selector("input[name=login]")  # the provider's own page
    assert page.url.startswith("http://127.0.0.1:") and "/interaction/" in page.url
    page.fill("input[name=login]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def test_sign_in_with_openid_connect_sets_teams_from_groups(page, oidc):
    oidc.set_account("maya", "maya-pw-1", ["vision-approvers"])
    _sign_in_with_provider(page, "maya", "maya-pw-1")
    page.wait_for_url("**/")
    assert "Welcome, maya" in page.locator("h1").inner_text()
    maya = User.objects.get(username="maya")
    assert (maya.directory, maya.directory_uid) == ("oidc", "maya")
    assert _roles("maya") == {"vision": "approver"}
    assert AuditEvent.objects.filter(action="user.logged_in", subject_id=str(maya.uuid)).exists()

    # The provider takes the group away: the next sign-in removes the role, audited.
    oidc.set_account("maya", "maya-pw-1", [])
    page.locator("form[action='/logout/'] button").click()
    page.wait_for_url("**/login/")
    # Still signed in at the provider (that is single sign-on): no form this time.
    page.click("#sso-oidc")
    page.wait_for_selector("h1:has-text('Welcome, maya')")
    assert _roles("maya") == {}
    event = AuditEvent.objects.filter(action="user.directory_roles", subject_id=str(maya.uuid)).order_by("-seq")[0]
    assert event.before["roles"] == {"vision": "approver"} and event.after["roles"] == {"vision": None}


def test_a_wrong_password_at_the_provider_never_reaches_the_hub(page, oidc):
    oidc.set_account("nils", "nils-pw-1", ["vision-members"])
    _sign_in_with_provider(page, "nils", "wrong")
    assert "Wrong username or password" in page.locator("[role=alert]").inner_text()
    assert not User.objects.filter(username="nils").exists()


def test_a_callback_with_a_state_this_browser_never_sent_is_refused(page, oidc):
    oidc.set_account("olga", "olga-pw-1", ["vision-members"])
    page.goto("/oidc/callback/?code=made-up&state=not-ours")
    assert "Sign-in failed" in page.locator("h1").inner_text()
    assert "state is unknown" in page.locator("[role=alert]").inner_text()
    assert page.locator("a", has_text="sign-in page").count() == 1
    assert AuditEvent.objects.filter(action="user.login_failed", after__reason__icontains="state").exists()
    assert not User.objects.filter(username="olga").exists()


class _TokenProxy(http.server.ThreadingHTTPServer):
    """Between the hub and the provider's token endpoint: passes every answer on, after
    `change(answer)` and `delay` seconds."""

    def __init__(self, target: str, change=None, delay: float = 0.0):
        self.target, self.change, self.delay = target, change, delay
        super().__init__(("127.0.0.1", 0), _TokenHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/token"


class _TokenHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = urllib.request.Request(
            self.server.target, data=body, headers={"Content-Type": self.headers["Content-Type"]}
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            answer = json.loads(r.read())
        if self.server.change:
            answer = self.server.change(answer)
        time.sleep(self.server.delay)
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def _through(proxy: _TokenProxy) -> None:
    """Send the hub's token requests through `proxy` (as a network path an attacker controls would)."""
    from apps.identity import oidc as hub_oidc

    document = dict(hub_oidc.discovery())
    document["token_endpoint"] = proxy.url
    hub_oidc._discovered[document["issuer"].rstrip("/")] = (time.monotonic() + 600, document)


def _flip_signature(answer: dict) -> dict:
    header, payload, signature = answer["id_token"].split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return {**answer, "id_token": f"{header}.{payload}.{flipped}"}


def test_a_tampered_id_token_is_refused(page, oidc):
    from apps.identity import oidc as hub_oidc

    oidc.set_account("pavel", "pavel-pw-1", ["vision-members"])
    proxy = _TokenProxy(hub_oidc.discovery()["token_endpoint"], change=_flip_signature)
    try:
        _through(proxy)
        _sign_in_with_provider(page, "pavel", "pavel-pw-1")
        page.wait_for_selector("[role=alert]")
        assert "signature does not match" in page.locator("[role=alert]").inner_text()
    finally:
        proxy.shutdown()
    assert not User.objects.filter(username="pavel").exists()
    assert AuditEvent.objects.filter(action="user.login_failed", after__reason__icontains="signature").exists()


def test_an_expired_id_token_is_refused(page, settings, live_server, transactional_db):
    short = start_provider(f"{live_server.url}/oidc/callback/", id_token_ttl=1)
    try:
        oidc_configure(settings, short)
        settings.AXLE_OIDC_LEEWAY_SECONDS = 0
        short.set_account("quentin", "quentin-pw-1", ["vision-members"])
        from apps.identity import oidc as hub_oidc

        proxy = _TokenProxy(hub_oidc.discovery()["token_endpoint"], delay=2.5)  # the token expires on its way
        try:
            _through(proxy)
            _sign_in_with_provider(page, "quentin", "quentin-pw-1")
            page.wait_for_selector("[role=alert]")
            assert "ID token has expired" in page.locator("[role=alert]").inner_text()
        finally:
            proxy.shutdown()
    finally:
        short.process.terminate()
        short.process.wait(timeout=10)
    assert not User.objects.filter(username="quentin").exists()


def test_a_user_disabled_on_the_hub_gets_a_clear_page(page, oidc):
    from tests.factories import UserFactory

    UserFactory(username="rosa", is_active=False)
    oidc.set_account("rosa", "rosa-pw-1", ["vision-members"])
    _sign_in_with_provider(page, "rosa", "rosa-pw-1")
    page.wait_for_selector("[role=alert]")
    assert "disabled" in page.locator("[role=alert]").inner_text()
    assert _roles("rosa") == {}


def test_sign_in_with_ldap_through_the_login_form(page, ldap_settings, ldap_directory, transactional_db):
    ldap_directory.add_person("sven", "sven-pw-1")
    ldap_directory.set_groups("sven", ["vision-members"])
    page.goto("/login/")
    assert "directory (LDAP)" in page.locator("main").inner_text()
    page.fill("#id_username", "sven")
    page.fill("#id_password", "sven-pw-1")
    page.click("button[type=submit]")
    page.wait_for_url("**/")
    assert "Welcome, sven" in page.locator("h1").inner_text()
    assert _roles("sven") == {"vision": "member"}
    assert User.objects.get(username="sven").directory == "ldap"

"""Issue 8, finding 7: logins are throttled and locked out per user and per address (audited),
and sessions end after a configurable age and idle time."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.cache import cache
from django.test import RequestFactory

from apps.accounts.api import TokenObtainThrottle
from apps.accounts.middleware import LAST_SEEN
from apps.accounts.security import client_ip
from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_verify

ROOT = Path(__file__).resolve().parents[2]


def _login(client, username, password, ip="10.0.0.1"):
    return client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=ip)


@pytest.mark.django_db
class TestLockout:
    def test_it_locks_a_username_out_after_five_wrong_passwords_from_anywhere(self, client, alice, password):
        statuses = [_login(client, "alice", "wrong", ip=f"10.0.1.{i}").status_code for i in range(5)]
        assert statuses == [200, 200, 200, 200, 429]
        # Locked even with the right password, from yet another address.
        response = _login(client, "alice", password, ip="10.0.1.99")
        assert response.status_code == 429
        assert "Too many failed logins" in response.content.decode()
        assert "_auth_user_id" not in client.session

    def test_it_locks_an_address_out_whatever_the_usernames(self, client, alice, password):
        for name in ("root", "admin", "bob", "carol", "dave"):
            _login(client, name, "guess", ip="10.0.2.7")
        assert _login(client, "alice", password, ip="10.0.2.7").status_code == 429
        assert _login(client, "alice", password, ip="10.0.2.8").status_code == 302  # others still log in

    def test_each_lockout_is_audited(self, client, alice):
        for i in range(5):
            _login(client, "alice", "wrong", ip=f"10.0.3.{i}")
        locked = AuditEvent.objects.get(action="user.locked_out")
        assert locked.after == {"username": "alice", "ip_address": "10.0.3.4"}
        assert AuditEvent.objects.filter(action="user.login_failed").count() == 5
        assert audit_verify().ok

    def test_the_admin_login_page_is_locked_out_too(self, client, django_user_model):
        django_user_model.objects.create_superuser("root-admin", password="admin-pass-12345")

        def admin_login(password, ip):
            return client.post(
                "/admin/login/?next=/admin/", {"username": "root-admin", "password": password}, REMOTE_ADDR=ip
            )

        statuses = [admin_login("wrong", f"10.0.4.{i}").status_code for i in range(5)]
        assert statuses == [200, 200, 200, 200, 429]
        response = admin_login("admin-pass-12345", "10.0.4.99")
        assert response.status_code == 429 and "Too many failed logins" in response.content.decode()
        assert "_auth_user_id" not in client.session
        locked = AuditEvent.objects.filter(action="user.locked_out")
        assert locked.exists() and {e.after["username"] for e in locked} == {"root-admin"}

    def test_a_successful_login_resets_the_count(self, client, alice, password):
        for _ in range(4):
            _login(client, "alice", "wrong")
        assert _login(client, "alice", password).status_code == 302
        client.logout()
        statuses = [_login(client, "alice", "wrong").status_code for _ in range(4)]
        assert statuses == [200] * 4

    def test_the_api_token_exchange_is_locked_out_too(self, api, alice, password):
        cache.clear()
        for i in range(5):
            last = api.post(
                "/api/v1/auth/token/", {"username": "alice", "password": "no"}, format="json", REMOTE_ADDR=f"10.0.4.{i}"
            )
        assert last.status_code == 429 and "Too many failed logins" in last.json()["detail"]
        right = api.post("/api/v1/auth/token/", {"username": "alice", "password": password}, format="json")
        assert right.status_code == 429 and "token" not in right.json()

    def test_the_api_token_exchange_is_rate_limited(self, api, alice, password, monkeypatch):
        cache.clear()
        monkeypatch.setattr(TokenObtainThrottle, "rate", "3/min")
        monkeypatch.setattr(TokenObtainThrottle, "num_requests", 3, raising=False)
        codes = [
            api.post("/api/v1/auth/token/", {"username": "alice", "password": password}, format="json").status_code
            for _ in range(4)
        ]
        cache.clear()
        assert codes == [201, 201, 201, 429]


class TestClientAddress:
    def test_it_uses_the_connection_without_proxies(self, settings):
        settings.AXLE_TRUSTED_PROXIES = 0
        request = RequestFactory().get("/", REMOTE_ADDR="10.1.1.1", HTTP_X_FORWARDED_FOR="6.6.6.6")
        assert client_ip(request) == "10.1.1.1"

    def test_behind_one_proxy_it_believes_only_what_the_proxy_appended(self, settings):
        settings.AXLE_TRUSTED_PROXIES = 1
        request = RequestFactory().get("/", REMOTE_ADDR="10.9.9.9", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.5")
        assert client_ip(request) == "203.0.113.5"


@pytest.mark.django_db
class TestSessions:
    def test_a_session_lasts_the_configured_age(self, client, alice, password, settings):
        assert settings.SESSION_COOKIE_AGE == 8 * 3600
        _login(client, "alice", password)
        assert client.session.get_expiry_age() == 8 * 3600

    def test_an_idle_session_is_logged_out(self, client, alice, settings):
        settings.AXLE_SESSION_IDLE_SECONDS = 1800
        client.force_login(alice)
        assert client.get("/jobs/").status_code == 200
        session = client.session
        session[LAST_SEEN] = int(time.time()) - 1801
        session.save()
        response = client.get("/jobs/")
        assert response.status_code == 302 and "/login/" in response["Location"]
        assert AuditEvent.objects.filter(action="user.logged_out", actor_username="alice").exists()
        assert client.get("/api/v1/me/").status_code in (401, 403)

    def test_an_active_session_stays(self, client, alice, settings):
        settings.AXLE_SESSION_IDLE_SECONDS = 1800
        client.force_login(alice)
        client.get("/jobs/")
        session = client.session
        session[LAST_SEEN] = int(time.time()) - 1700
        session.save()
        assert client.get("/jobs/").status_code == 200
        assert client.session[LAST_SEEN] >= int(time.time()) - 5  # refreshed


@pytest.mark.slow
def test_the_session_and_lockout_settings_come_from_the_environment():
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_SETTINGS")}
    env.update(
        DJANGO_SETTINGS_MODULE="portal.settings.test",
        DJANGO_SESSION_AGE="3600",
        AXLE_SESSION_IDLE_SECONDS="600",
        AXLE_LOGIN_FAILURE_LIMIT="8",
        AXLE_LOGIN_LOCKOUT_SECONDS="120",
    )
    code = (
        "from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_AGE, s.AXLE_SESSION_IDLE_SECONDS, s.AXES_FAILURE_LIMIT, "
        "int(s.AXES_COOLOFF_TIME.total_seconds()))"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-v", "0", "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.stdout.split() == ["3600", "600", "8", "120"], result.stderr

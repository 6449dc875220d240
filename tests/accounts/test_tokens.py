import pytest

from apps.accounts.models import ApiToken
from apps.accounts.services import token_create
from apps.audit.models import AuditEvent


@pytest.mark.django_db
class TestApiTokens:
    def test_it_exchanges_username_and_password_for_a_working_token(self, api, alice, password):
        response = api.post(
            "/api/v1/auth/token/", {"username": "alice", "password": password, "name": "cli"}, format="json"
        )
        assert response.status_code == 201
        key = response.json()["token"]
        api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        me = api.get("/api/v1/me/")
        assert me.status_code == 200 and me.json()["username"] == "alice"
        assert me.json()["teams"] == [{"team": "vision", "role": "member"}]

    def test_it_refuses_a_wrong_password_and_audits_the_attempt(self, api, alice):
        response = api.post("/api/v1/auth/token/", {"username": "alice", "password": "nope"}, format="json")
        assert response.status_code == 401 and response["WWW-Authenticate"] == "Token"
        assert "Unable to log in" in response.json()["detail"]
        failed = AuditEvent.objects.get(action="user.login_failed")
        assert failed.after == {"username": "alice"}
        assert "nope" not in str(failed.before) + str(failed.after)

    def test_it_stores_only_a_hash_of_the_key(self, alice):
        token, key = token_create(user=alice, name="laptop")
        stored = ApiToken.objects.get(pk=token.pk)
        assert key not in (stored.key_hash, stored.prefix, stored.name)
        assert key.startswith(stored.prefix)

    def test_a_revoked_token_is_refused(self, client, api, alice):
        token, key = token_create(user=alice, name="laptop")
        client.force_login(alice)
        response = client.post(f"/tokens/{token.uuid}/revoke/")
        assert response.status_code == 302
        api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        assert api.get("/api/v1/me/").status_code == 401
        assert AuditEvent.objects.filter(action="token.revoked", subject_id=str(token.uuid)).exists()

    def test_nobody_can_revoke_someone_elses_token(self, client, alice, bob):
        token, key = token_create(user=alice, name="laptop")
        client.force_login(bob)
        client.post(f"/tokens/{token.uuid}/revoke/")
        assert ApiToken.objects.get(pk=token.pk).is_active

    def test_the_dashboard_shows_a_new_key_once(self, client, alice):
        client.force_login(alice)
        response = client.post("/tokens/", {"name": "notebook"})
        key = response.context["new_key"]
        assert key and key in response.content.decode()
        again = client.get("/tokens/").content.decode()
        assert key not in again and "notebook" in again

    def test_a_token_needs_a_name(self, client, alice):
        client.force_login(alice)
        response = client.post("/tokens/", {"name": "  "})
        assert "Give the token a name" in response.content.decode()
        assert not ApiToken.objects.exists()

    def test_a_garbage_authorization_header_gets_401_not_500(self, api, db):
        api.credentials(HTTP_AUTHORIZATION="Token a b c")
        assert api.get("/api/v1/me/").status_code == 401
        api.credentials(HTTP_AUTHORIZATION="Token axle_doesnotexist")
        assert api.get("/api/v1/me/").status_code == 401


@pytest.mark.django_db
class TestSessions:
    def test_logins_failed_logins_and_logouts_are_audited(self, client, alice, password):
        client.post("/login/", {"username": "alice", "password": "wrong"})
        client.post("/login/", {"username": "alice", "password": password})
        client.post("/logout/")
        actions = list(AuditEvent.objects.order_by("seq").values_list("action", flat=True))
        assert actions == ["user.login_failed", "user.logged_in", "user.logged_out"]
        assert AuditEvent.objects.get(action="user.logged_in").request_id

    def test_password_change_works(self, client, alice, password):
        client.force_login(alice)
        response = client.post(
            "/password/change/",
            {
                "old_password": password,
                "new_password1": "a much newer passphrase",
                "new_password2": "a much newer passphrase",
            },
        )
        assert response.status_code == 302
        alice.refresh_from_db()
        assert alice.check_password("a much newer passphrase")

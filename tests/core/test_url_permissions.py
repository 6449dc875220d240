"""Every URL needs a logged-in user unless it is deliberately public. The sweep walks the
whole URL configuration, so a page added later without protection fails here."""

import re
import uuid

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

# Deliberately public: the login form, the health check for load balancers, token exchange
# by password, Django admin's own login, and static assets.
PUBLIC = {
    "login",
    "healthz",
    "api-token-obtain",
    "admin:login",
    "admin:password_reset",  # not routed by default; listed so adding it is a decision
    # Single sign-on: the start of an OIDC sign-in, the provider's return, and its failure page.
    "oidc_authentication_init",
    "oidc_authentication_callback",
    "sso-failed",
    "pipeline-webhook",  # a forge's push delivery: its signature under the pipeline's secret is the login
}


def _walk(patterns, prefix="", namespace=""):
    for p in patterns:
        if isinstance(p, URLResolver):
            ns = f"{namespace}{p.namespace}:" if p.namespace else namespace
            yield from _walk(p.url_patterns, prefix + str(p.pattern), ns)
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern), (namespace + p.name) if p.name else None


def _concrete(route: str) -> str:
    route = route.lstrip("^").rstrip("$").replace("\\Z", "").replace("\\/", "/")
    route = re.sub(r"<uuid:\w+>", str(uuid.uuid4()), route)
    route = re.sub(r"<(int|path|slug|str):?\w*>", "1", route)
    route = re.sub(r"<\w+>", "1", route)
    route = re.sub(r"\(\?P<\w+>[^)]*\)", "1", route)
    return "/" + route.replace("(?:", "").replace(")?", "").replace("?", "")


ROUTES = sorted({(_concrete(r), n) for r, n in _walk(get_resolver().url_patterns)}, key=lambda x: x[0])


def test_the_sweep_finds_the_routes_it_should():
    names = {n for _, n in ROUTES}
    assert {"home", "token-list", "audit-list", "api-me", "admin:index"} <= names


@pytest.mark.django_db
@pytest.mark.parametrize("path,name", [r for r in ROUTES if r[1] not in PUBLIC], ids=lambda v: str(v))
@pytest.mark.parametrize("method", ["get", "post"])
def test_anonymous_visitors_are_turned_away(client, path, name, method):
    response = getattr(client, method)(path)
    if path.startswith("/api/"):
        assert response.status_code in (401, 403), f"{method.upper()} {path} answered {response.status_code}"
    elif path.startswith("/admin/"):
        assert response.status_code in (302, 404, 405), f"{method.upper()} {path} answered {response.status_code}"
        if response.status_code == 302:
            assert "/login/" in response["Location"]
    else:
        assert response.status_code in (302, 405), f"{method.upper()} {path} answered {response.status_code}"
        if response.status_code == 302:
            assert response["Location"].startswith("/login/")


@pytest.mark.django_db
def test_a_logged_in_member_cannot_open_admin_only_pages(client, alice):
    client.force_login(alice)
    assert client.get("/audit/").status_code == 403
    assert client.get("/audit/export.csv").status_code == 403
    assert client.get("/admin/").status_code == 302  # to the admin's own login: alice is not staff


@pytest.mark.django_db
def test_sign_in_pages_answer_anonymously_and_say_when_sso_is_off(client):
    response = client.get("/oidc/authenticate/")
    assert response.status_code == 404 and b"not configured" in response.content
    assert client.get("/oidc/callback/?state=x&code=y").status_code == 403
    assert client.get("/sso/failed/").status_code == 403


@pytest.mark.django_db
def test_public_pages_answer_anonymously(client):
    assert client.get("/login/").status_code == 200
    assert client.get("/healthz").json() == {"status": "ok"}

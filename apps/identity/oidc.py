"""OpenID Connect sign-in through mozilla-django-oidc: authorization code flow with PKCE,
`state` and `nonce` checked, endpoints from the issuer's discovery document, and the ID token
checked with PyJWT against the provider's JWKS (signature, issuer, audience, expiry, issue
time, nonce; mozilla-django-oidc itself checks only the signature and nonce). The username is
the AXLE_OIDC_USERNAME_CLAIM claim; groups (AXLE_OIDC_GROUPS_CLAIM) set teams and roles
through the group map at every sign-in. Any failure ends on a page that says what happened,
audited like a failed password login."""

from __future__ import annotations

import logging
import time

import jwt
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import SuspiciousOperation
from django.shortcuts import render
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from apps.accounts.models import User
from apps.audit.services import audit_record

from .directory import directory_apply, directory_mark

log = logging.getLogger(__name__)

DISCOVERY_SECONDS = 3600
_discovered: dict[str, tuple[float, dict]] = {}


class ProviderUnavailable(Exception):
    pass


def discovery() -> dict:
    """The issuer's /.well-known/openid-configuration, cached for an hour, its `issuer`
    checked against the configured one (OpenID Connect Discovery 1.0, section 4.3)."""
    issuer = settings.AXLE_OIDC_ISSUER.rstrip("/")
    cached = _discovered.get(issuer)
    if cached and cached[0] > time.monotonic():
        return cached[1]
    try:
        response = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=10)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise ProviderUnavailable(f"The sign-in provider at {issuer} does not answer: {exc}") from None
    if str(document.get("issuer", "")).rstrip("/") != issuer:
        raise ProviderUnavailable(f"The provider at {issuer} names itself {document.get('issuer')!r}.")
    for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        if not document.get(key):
            raise ProviderUnavailable(f"The provider at {issuer} publishes no {key}.")
    _discovered[issuer] = (time.monotonic() + DISCOVERY_SECONDS, document)
    return document


def _username(claims: dict) -> str:
    return str(claims.get(settings.AXLE_OIDC_USERNAME_CLAIM) or "")[:150]


def _groups(claims: dict) -> list[str]:
    groups = claims.get(settings.AXLE_OIDC_GROUPS_CLAIM) or []
    return [str(g) for g in groups] if isinstance(groups, list) else [str(groups)]


class DirectoryOIDCBackend(OIDCAuthenticationBackend):
    def authenticate(self, request, **kwargs):
        if request is None or not settings.AXLE_OIDC_ISSUER or "code" not in request.GET:
            return None
        document = discovery()
        self.OIDC_OP_TOKEN_ENDPOINT = document["token_endpoint"]
        self.OIDC_OP_USER_ENDPOINT = document.get("userinfo_endpoint", "")
        self.OIDC_OP_JWKS_ENDPOINT = document["jwks_uri"]
        return super().authenticate(request, **kwargs)

    def verify_token(self, token, **kwargs):
        try:
            key = self.retrieve_matching_jwk(token)
            payload = jwt.decode(
                token,
                key=key.key,
                algorithms=[self.OIDC_RP_SIGN_ALGO],
                audience=self.OIDC_RP_CLIENT_ID,
                issuer=discovery()["issuer"],
                leeway=settings.AXLE_OIDC_LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise SuspiciousOperation("The provider's ID token has expired.") from None
        except jwt.InvalidSignatureError:
            raise SuspiciousOperation("The ID token's signature does not match the provider's keys.") from None
        except (jwt.InvalidTokenError, jwt.PyJWKError, ValueError) as exc:
            raise SuspiciousOperation(f"The ID token is not valid: {exc}") from None
        if payload.get("nonce") != kwargs.get("nonce"):
            raise SuspiciousOperation("The ID token's nonce is not the one this sign-in sent.")
        return payload

    def get_userinfo(self, access_token, id_token, payload):
        claims = dict(payload)
        if self.OIDC_OP_USER_ENDPOINT:
            info = super().get_userinfo(access_token, id_token, payload)
            if info.get("sub") != payload.get("sub"):
                raise SuspiciousOperation("The provider's user info is for another subject than the ID token.")
            claims.update(info)
        return claims

    def verify_claims(self, claims):
        return bool(_username(claims))

    def filter_users_by_claims(self, claims):
        return get_user_model().objects.filter(username=_username(claims))

    def create_user(self, claims):
        user = get_user_model().objects.create_user(_username(claims), email=claims.get("email", ""))
        user.set_unusable_password()
        user.save(update_fields=["password"])
        audit_record(action="user.created", subject=user, actor=None, after={"username": user.username, "via": "oidc"})
        return user

    def update_user(self, user, claims):
        email = str(claims.get("email") or "")
        if email and user.email != email:
            get_user_model().objects.filter(pk=user.pk).update(email=email)
            user.email = email
        return user

    def get_or_create_user(self, access_token, id_token, payload):
        user = super().get_or_create_user(access_token, id_token, payload)
        if user is not None and user.is_active:
            claims = self.get_userinfo(access_token, id_token, payload)
            directory_mark(user=user, source=User.Directory.OIDC, uid=_username(claims))
            directory_apply(user=user, groups=_groups(claims), source="oidc")
        return user


def _failed(request, reason: str, status: int = 403):
    audit_record(
        action="user.login_failed",
        subject_type="accounts.user",
        subject_text="",
        after={"via": "oidc", "reason": reason[:300]},
    )
    log.info("OIDC sign-in failed: %s", reason)
    return render(
        request,
        "identity/failed.html",
        {"reason": reason, "provider": settings.AXLE_OIDC_NAME},
        status=status,
    )


class AuthenticateView(OIDCAuthenticationRequestView):
    def get(self, request):
        if not settings.AXLE_OIDC_ISSUER:
            return _failed(request, "Single sign-on is not configured on this hub.", status=404)
        try:
            self.OIDC_OP_AUTH_ENDPOINT = discovery()["authorization_endpoint"]
        except ProviderUnavailable as exc:
            return _failed(request, str(exc), status=503)
        return super().get(request)


class CallbackView(OIDCAuthenticationCallbackView):
    def get(self, request):
        if "error" in request.GET:
            return _failed(
                request, f"The provider refused: {request.GET.get('error_description') or request.GET['error']}"
            )
        if "state" in request.GET and request.GET["state"] not in request.session.get("oidc_states", {}):
            return _failed(request, "This sign-in was not started here, or was already used (its state is unknown).")
        try:
            return super().get(request)
        except SuspiciousOperation as exc:
            return _failed(request, str(exc))
        except ProviderUnavailable as exc:
            return _failed(request, str(exc), status=503)
        except requests.RequestException as exc:
            return _failed(request, f"The provider did not answer: {exc}", status=502)

    def login_failure(self):
        user = getattr(self, "user", None)
        if user is not None and not user.is_active:
            return _failed(self.request, "Your account is disabled on this hub. Ask an administrator.")
        return _failed(self.request, "The provider did not confirm who you are.")


def sso_failed(request):
    """Where mozilla-django-oidc sends a failure it handles itself (LOGIN_REDIRECT_URL_FAILURE)."""
    return _failed(request, "The sign-in did not complete.")

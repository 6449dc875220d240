"""How GitHub, GitLab and Gitea announce a push, and how each proves it came from them.

Pure functions on the request's headers and raw body, no Django: the view hands them what it
received and acts on the answer. Each forge is verified by its own scheme only, and every
comparison of a secret is constant-time (``hmac.compare_digest``), so the time a refusal takes
says nothing about how much of a guess was right.

- GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``, delivery id in
  ``X-GitHub-Delivery``, event in ``X-GitHub-Event``.
- GitLab: the secret itself in ``X-Gitlab-Token`` (GitLab signs nothing), delivery id in
  ``Idempotency-Key`` (GitLab 17.4+, the same across retries) or ``X-Gitlab-Event-UUID``,
  event in ``X-Gitlab-Event``.
- Gitea (and Forgejo): ``X-Gitea-Signature: <hex HMAC-SHA256 of the body>``, delivery id in
  ``X-Gitea-Delivery``, event in ``X-Gitea-Event``. Gitea also sends GitHub's headers; its
  own are checked first, so a Gitea delivery is always judged as Gitea's."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

GITHUB, GITLAB, GITEA = "github", "gitlab", "gitea"
FORGES = (GITHUB, GITLAB, GITEA)
FORGE_NAMES = {GITHUB: "GitHub", GITLAB: "GitLab", GITEA: "Gitea"}

ZERO_SHA = re.compile(r"^0+$")
SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")  # SHA-1, or SHA-256 repositories
DELIVERY = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


class WebhookRefused(Exception):
    """The request is not a delivery the hub will look at. ``status`` is the HTTP answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class BadSignature(WebhookRefused):
    def __init__(self, message: str) -> None:
        super().__init__(message, status=403)


@dataclass(frozen=True)
class Delivery:
    """A request whose signature checked out, as the forge described it."""

    forge: str
    delivery_id: str
    event: str
    is_push: bool


@dataclass(frozen=True)
class Push:
    ref: str  # refs/heads/main
    after: str  # the commit the branch points at now; zeros when it was deleted
    repository: str  # the forge's name for it, for the record only

    @property
    def branch(self) -> str | None:
        return self.ref.removeprefix("refs/heads/") if self.ref.startswith("refs/heads/") else None

    @property
    def deleted(self) -> bool:
        return bool(ZERO_SHA.match(self.after))


def _header(headers: Mapping[str, str], name: str) -> str:
    # Django's request.headers is case-insensitive; a plain dict (tests of this module) is not.
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), "")
    return (value or "").strip()


def detect(headers: Mapping[str, str]) -> str:
    """Which forge the request claims to come from, by the headers only that forge sends."""
    if _header(headers, "X-Gitea-Event") or _header(headers, "X-Gitea-Signature"):
        return GITEA
    if _header(headers, "X-Gitlab-Event") or _header(headers, "X-Gitlab-Token"):
        return GITLAB
    if _header(headers, "X-GitHub-Event") or _header(headers, "X-Hub-Signature-256"):
        return GITHUB
    raise WebhookRefused("Not a GitHub, GitLab or Gitea webhook: none of their event headers is present.")


def hmac_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


def verify(forge: str, headers: Mapping[str, str], body: bytes, secret: str) -> None:
    """Raise BadSignature unless the request carries ``secret``'s proof in ``forge``'s scheme."""
    if forge == GITHUB:
        given = _header(headers, "X-Hub-Signature-256")
        if not given:
            raise BadSignature("GitHub delivery without X-Hub-Signature-256: set the webhook's secret.")
        if not _equal(given, "sha256=" + hmac_hex(secret, body)):
            raise BadSignature("X-Hub-Signature-256 does not match the body and this pipeline's secret.")
    elif forge == GITEA:
        given = _header(headers, "X-Gitea-Signature")
        if not given:
            raise BadSignature("Gitea delivery without X-Gitea-Signature: set the webhook's secret.")
        if not _equal(given, hmac_hex(secret, body)):
            raise BadSignature("X-Gitea-Signature does not match the body and this pipeline's secret.")
    elif forge == GITLAB:
        given = _header(headers, "X-Gitlab-Token")
        if not given:
            raise BadSignature("GitLab delivery without X-Gitlab-Token: set the webhook's secret token.")
        if not _equal(given, secret):
            raise BadSignature("X-Gitlab-Token is not this pipeline's secret.")
    else:  # pragma: no cover - detect() answers one of FORGES
        raise WebhookRefused(f"Unknown forge {forge!r}.")


def delivery(forge: str, headers: Mapping[str, str]) -> Delivery:
    """The delivery id and event of a verified request."""
    if forge == GITHUB:
        delivery_id, event = _header(headers, "X-GitHub-Delivery"), _header(headers, "X-GitHub-Event")
        is_push = event == "push"
    elif forge == GITEA:
        delivery_id, event = _header(headers, "X-Gitea-Delivery"), _header(headers, "X-Gitea-Event")
        is_push = event == "push"
    else:
        delivery_id = (
            _header(headers, "Idempotency-Key")
            or _header(headers, "X-Gitlab-Event-UUID")
            or _header(headers, "X-Gitlab-Webhook-UUID")
        )
        event = _header(headers, "X-Gitlab-Event")
        is_push = event == "Push Hook"
    if not delivery_id:
        raise WebhookRefused(f"{FORGE_NAMES[forge]} delivery without a delivery id header.")
    if not DELIVERY.match(delivery_id):
        raise WebhookRefused("The delivery id is not one a forge sends (letters, digits, - . _ :, at most 100).")
    return Delivery(forge=forge, delivery_id=delivery_id, event=event[:64], is_push=is_push)


def parse_push(body: bytes) -> Push:
    """The ref and new commit of a push event's JSON body (the same keys on all three forges)."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WebhookRefused(f"The body is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise WebhookRefused("The body is not a JSON object.")
    ref, after = payload.get("ref"), payload.get("after")
    if not isinstance(ref, str) or not ref.startswith("refs/"):
        raise WebhookRefused("The push event has no 'ref' such as refs/heads/main.")
    if not isinstance(after, str) or not (SHA.match(after) or ZERO_SHA.match(after)):
        raise WebhookRefused("The push event has no 'after' commit.")
    repo = payload.get("repository") if isinstance(payload.get("repository"), dict) else {}
    project = payload.get("project") if isinstance(payload.get("project"), dict) else {}
    name = repo.get("full_name") or project.get("path_with_namespace") or repo.get("name") or ""
    return Push(ref=ref[:255], after=after, repository=str(name)[:255])

"""E-mail about deployment requests, sent once the transaction that decided them commits."""

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction

from . import policy
from .models import Deployment


def _send(subject: str, body: str, recipients: list[str]) -> None:
    recipients = sorted({r for r in recipients if r})
    if recipients:
        transaction.on_commit(
            lambda: send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, recipients, fail_silently=True)
        )


def approval_wanted(deployment: Deployment) -> None:
    version, env = deployment.model_version, deployment.environment
    _send(
        f"[Axle] Approval wanted: {version} to {env.name}",
        f"{deployment.requested_by.get_username()} asks to serve {version} in {env.name}.\n"
        f"Reason: {deployment.reason}\nReview it in your Axle approvals inbox.",
        list(policy.approvers(deployment).values_list("email", flat=True)),
    )


def decided(deployment: Deployment, *, by, decision: str, comment: str) -> None:
    _send(
        f"[Axle] {deployment.model_version} to {deployment.environment.name}: "
        f"{deployment.get_status_display().lower()}",
        f"{by.get_username()} {decision}d your request.\nComment: {comment or '-'}",
        [deployment.requested_by.email],
    )

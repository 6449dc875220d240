"""Secrets the pipeline triggers keep, for `manage.py rotate_secrets`."""

from django.db import transaction

from apps.audit.services import audit_record
from apps.core import crypto

from .models import TriggerSettings


def rotate() -> int:
    """Re-encrypt every pipeline's webhook secret with the newest key."""
    count = 0
    with transaction.atomic():
        for row in TriggerSettings.objects.select_for_update().exclude(webhook_secret_encrypted=""):
            row.webhook_secret_encrypted = crypto.rotate(row.webhook_secret_encrypted)
            row.save(update_fields=["webhook_secret_encrypted"])
            count += 1
        if count:
            audit_record(action="secrets.rotated", after={"pipeline_webhooks": count})
    return count

"""Secrets the serving app keeps, for `manage.py rotate_secrets`."""

from django.db import transaction

from apps.audit.services import audit_record
from apps.core import crypto

from .models import Environment


def rotate() -> int:
    """Re-encrypt every environment's kubeconfig with the newest key."""
    count = 0
    with transaction.atomic():
        for env in Environment.objects.select_for_update().exclude(kubeconfig_encrypted=""):
            env.kubeconfig_encrypted = crypto.rotate(env.kubeconfig_encrypted)
            env.save(update_fields=["kubeconfig_encrypted"])
            count += 1
        if count:
            audit_record(action="secrets.rotated", after={"environments": count})
    return count

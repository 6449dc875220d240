from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from .models import Lease


def acquire_lease(name: str, duration: timedelta) -> bool:
    """Take the lease ``name`` unless someone holds it; compare-and-swap, no waiting."""
    now = timezone.now()
    if Lease.objects.filter(name=name, held_until__lt=now).update(held_until=now + duration):
        return True
    try:
        with transaction.atomic():
            Lease.objects.create(name=name, held_until=now + duration)
        return True
    except IntegrityError:
        return False


def release_lease(name: str) -> None:
    Lease.objects.filter(name=name).update(held_until=timezone.now())

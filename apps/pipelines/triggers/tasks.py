"""Background work of the pipeline triggers. Safe to run twice: every fire and every poll is
claimed by a compare-and-swap before it acts."""

import logging
import time
from datetime import timedelta

from django.db import transaction

from apps.core.leases import acquire_lease, release_lease

from . import services

log = logging.getLogger(__name__)


def webhook_delivery_start(delivery_id: int):
    services.webhook_delivery_start(delivery_id=delivery_id)


def triggers_tick(seconds: int = 55, interval: float = 5.0):
    """Fire due schedules and polls every few seconds for about a minute."""
    deadline = time.monotonic() + seconds
    if not acquire_lease("pipeline-triggers", timedelta(seconds=seconds + 10)):
        return "another worker holds the lease"
    try:
        while True:
            triggers_once()
            transaction.get_connection().close_if_unusable_or_obsolete()
            if time.monotonic() + interval >= deadline:
                break
            time.sleep(interval)
    finally:
        release_lease("pipeline-triggers")
    return "done"


def triggers_once(now=None) -> None:
    """One pass: starts a dead worker left half done (re-driven first, so a pending poll or fire
    is settled before the next one), due schedules, due polls, deliveries waiting for a retry.
    One failing does not keep the others from their turn."""
    for step in (services.triggers_redrive, services.schedules_due, services.polls_due, services.deliveries_retry):
        try:
            step(now=now)
        except Exception:
            log.exception("pipeline trigger cycle failed in %s", step.__name__)

"""Background work for sweeps. Each task fetches by id and calls one service; all are safe to
run twice."""

import logging
import time
from datetime import timedelta

from django.db import transaction

from apps.core.leases import acquire_lease, release_lease

from . import advance, services

log = logging.getLogger(__name__)


def sweep_launch(sweep_id: int):
    services.sweep_launch(sweep_id=sweep_id)


def sweep_advance(sweep_id: int):
    advance.sweep_advance(sweep_id=sweep_id)


def sweeps_track(seconds: int = 55, interval: float = 5.0):
    """Advance every running sweep every few seconds for about a minute (the jobs' own
    tracking loop polls Slurm; this reads what it recorded, and MLflow)."""
    deadline = time.monotonic() + seconds
    if not acquire_lease("sweeps-track", timedelta(seconds=seconds + 10)):
        return "another tracker holds the lease"
    while time.monotonic() < deadline:
        try:
            advance.sweeps_tick()
        except Exception:
            log.exception("sweep cycle failed")
        finally:
            transaction.get_connection().close_if_unusable_or_obsolete()
        time.sleep(interval)
    release_lease("sweeps-track")
    return "done"

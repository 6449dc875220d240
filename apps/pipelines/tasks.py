"""Background work for pipelines. Each task fetches by id and calls one service; all are safe
to run twice."""

import logging
import time
from datetime import timedelta

from django.db import transaction

from apps.core.leases import acquire_lease, release_lease

from . import services

log = logging.getLogger(__name__)


def pipeline_run_advance(run_id: int):
    services.pipeline_run_advance(run_id=run_id)


def pipelines_track(seconds: int = 55, interval: float = 3.0):
    """Advance every active run every few seconds for about a minute. The jobs' own tracking
    loop polls Slurm (one batched call per cluster); this reads what it recorded, and talks to
    a cluster only to submit a step or checksum a finished step's outputs."""
    deadline = time.monotonic() + seconds
    if not acquire_lease("pipelines-track", timedelta(seconds=seconds + 10)):
        return "another tracker holds the lease"
    while time.monotonic() < deadline:
        try:
            services.pipeline_runs_advance()
        except Exception:
            log.exception("pipeline cycle failed")
        finally:
            transaction.get_connection().close_if_unusable_or_obsolete()
        time.sleep(interval)
    release_lease("pipelines-track")
    return "done"

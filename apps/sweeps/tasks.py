"""Background work for sweeps. Each task fetches by id and calls one service; all are safe to
run twice."""

import logging

from apps.core.leases import leased_loop
from apps.jobs.tasks import job_submit

from . import advance, services

log = logging.getLogger(__name__)


def sweep_launch(sweep_id: int):
    job = services.sweep_launch(sweep_id=sweep_id)
    if job is not None:
        # The wave goes to Slurm from here, not from a task of its own: the time from a POST to
        # the trials on Slurm is one task's pickup, not two. The job's own queued task (and the
        # re-drive) find it taken, by its lease or its state, and leave it.
        job_submit(job.pk)


def sweep_advance(sweep_id: int):
    advance.sweep_advance(sweep_id=sweep_id)


def sweeps_track(seconds: int = 55, interval: float = 5.0):
    """Advance every running sweep every few seconds for about a minute (the jobs' own
    tracking loop polls Slurm; this reads what it recorded, and MLflow). The same leased loop
    as the jobs' (apps.core.leases.leased_loop): on PostgreSQL its lease dies with a killed
    worker's connection, so the next loop (queued when a worker spawns, or by the schedule)
    starts at once."""
    return leased_loop(
        "sweeps-track",
        advance.sweeps_tick,
        seconds=seconds,
        interval=interval,
        then="apps.sweeps.tasks.sweeps_track",
        log=log,
    )

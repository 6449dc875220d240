"""The sweeps' tracking loop holds the same work lease as the jobs' (a PostgreSQL advisory lock
held by the worker's connection): while a live loop holds it a second one steps aside, and once
the holder is killed the next loop proceeds at once, not when a timed lease would expire."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.core.models import Lease
from apps.sweeps import services, tasks
from apps.sweeps.models import Sweep, Trial
from tests.other_worker import OtherWorker

from .conftest import experiment
from .test_advance import finish, launched

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]
T = Trial.State


def test_the_next_loop_advances_sweeps_at_once_after_the_holder_was_killed(alice, grant):
    sweep = services.sweep_create(user=alice, cluster=grant.cluster, spec_text=experiment(trials=2, parallel=1))
    launched(sweep)
    finish(sweep, 0, T.SUCCEEDED, 0.3)
    finish(sweep, 1, T.SUCCEEDED, 0.1)
    holder = OtherWorker("sweeps-track")
    try:
        assert tasks.sweeps_track(seconds=1, interval=0.1) == "another tracker holds the lease"
        sweep.refresh_from_db()
        assert sweep.status == Sweep.Status.RUNNING
    finally:
        holder.die()
    # What the old timed lease left behind a killed worker: a row held for another 65 s. It
    # no longer matters: the first loop after the kill takes the lease and advances the sweep.
    Lease.objects.create(name="sweeps-track", held_until=timezone.now() + timedelta(seconds=65))
    assert tasks.sweeps_track(seconds=0.5, interval=0.1) == "done"
    sweep.refresh_from_db()
    assert (sweep.status, sweep.best_value) == (Sweep.Status.SUCCEEDED, 0.1)

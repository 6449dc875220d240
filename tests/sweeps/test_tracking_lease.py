"""The sweeps' tracking loop holds the same work lease as the jobs' (a PostgreSQL advisory lock
held by the worker's connection): while a live loop holds it a second one steps aside, and once
the holder is killed the next loop proceeds at once, not when a timed lease would expire."""

import time

import psycopg
import pytest
from django.db import connection

from apps.core.leases import _advisory_key
from apps.core.models import Lease
from apps.sweeps import services, tasks
from apps.sweeps.models import Sweep, Trial

from .conftest import experiment
from .test_advance import finish, launched

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]
T = Trial.State


class OtherWorker:
    """Another worker's loop holding the sweeps' lease on a connection of its own; `die()`
    drops that connection, as a worker killed with SIGKILL does."""

    def __init__(self):
        s = connection.settings_dict
        self.conn = psycopg.connect(
            dbname=s["NAME"],
            user=s["USER"],
            password=s["PASSWORD"] or None,
            host=s["HOST"] or None,
            port=s["PORT"] or None,
            autocommit=True,
        )
        self.conn.execute("SELECT pg_advisory_lock(%s, %s)", _advisory_key("sweeps-track"))

    def die(self):
        self.conn.close()


def test_the_next_loop_advances_sweeps_at_once_after_the_holder_was_killed(alice, grant):
    sweep = services.sweep_create(user=alice, cluster=grant.cluster, spec_text=experiment(trials=2, parallel=1))
    launched(sweep)
    finish(sweep, 0, T.SUCCEEDED, 0.3)
    finish(sweep, 1, T.SUCCEEDED, 0.1)
    holder = OtherWorker()
    try:
        assert tasks.sweeps_track(seconds=1, interval=0.1) == "another tracker holds the lease"
        sweep.refresh_from_db()
        assert sweep.status == Sweep.Status.RUNNING
    finally:
        holder.die()
    started = time.monotonic()
    assert tasks.sweeps_track(seconds=0.5, interval=0.1) == "done"
    sweep.refresh_from_db()
    assert (sweep.status, sweep.best_value) == (Sweep.Status.SUCCEEDED, 0.1)
    assert time.monotonic() - started < 5  # not the old timed lease's 65 s
    # No timed lease row is left behind for a killed worker to block the next loop with.
    assert not Lease.objects.filter(name="sweeps-track").exists()

"""The sweeps' tracking loop holds the same work lease as the jobs' (a PostgreSQL advisory lock
held by the worker's connection): while a live loop holds it a second one steps aside, and once
the holder is killed the next loop proceeds at once, not when a timed lease would expire."""

import time
from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

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
        self.pid = self.conn.execute("SELECT pg_backend_pid()").fetchone()[0]

    def die(self):
        self.conn.close()
        # The server ends the dead client's backend (and with it the lock) within moments;
        # on a loaded machine "moments" is measurable, so wait for it, as the next loop would.
        deadline = time.monotonic() + 10
        with connection.cursor() as cursor:
            while time.monotonic() < deadline:
                cursor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [self.pid])
                if cursor.fetchone() is None:
                    return
                time.sleep(0.02)


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
    # What the old timed lease left behind a killed worker: a row held for another 65 s. It
    # no longer matters: the first loop after the kill takes the lease and advances the sweep.
    Lease.objects.create(name="sweeps-track", held_until=timezone.now() + timedelta(seconds=65))
    assert tasks.sweeps_track(seconds=0.5, interval=0.1) == "done"
    sweep.refresh_from_db()
    assert (sweep.status, sweep.best_value) == (Sweep.Status.SUCCEEDED, 0.1)

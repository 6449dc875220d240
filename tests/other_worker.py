"""Another worker process holding a lease (a PostgreSQL advisory lock) on a database connection
of its own; `die()` drops that connection as a worker killed with SIGKILL does, and returns once
the server has ended its backend and with it the lock."""

import time

import psycopg
from django.db import connection

from apps.core.leases import _advisory_key


class OtherWorker:
    def __init__(self, lease: str):
        s = connection.settings_dict
        self.conn = psycopg.connect(
            dbname=s["NAME"],
            user=s["USER"],
            password=s["PASSWORD"] or None,
            host=s["HOST"] or None,
            port=s["PORT"] or None,
            autocommit=True,
        )
        self.conn.execute("SELECT pg_advisory_lock(%s, %s)", _advisory_key(lease))
        self.pid = self.conn.execute("SELECT pg_backend_pid()").fetchone()[0]

    def die(self) -> None:
        self.conn.close()
        # The server ends the dead client's backend within moments; on a loaded machine
        # "moments" is measurable, so wait for it, as the next look at the lease would.
        deadline = time.monotonic() + 10
        with connection.cursor() as cursor:
            while time.monotonic() < deadline:
                # pg_stat_activity is read once per transaction (and these tests run in one):
                # clear that snapshot so each look sees the server as it is now.
                cursor.execute("SELECT pg_stat_clear_snapshot()")
                cursor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [self.pid])
                if cursor.fetchone() is None:
                    return
                time.sleep(0.02)
        raise AssertionError(f"PostgreSQL did not end the killed worker's backend {self.pid} in 10 s")

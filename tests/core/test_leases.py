"""Work leases taken many at once (`work_leases`): the ones another process holds are left out,
the others are held until the block ends, in one statement each way on PostgreSQL."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.core.leases import work_leases
from tests.pipelines.triggers.test_redrive import OtherWorker

pytestmark = pytest.mark.django_db(transaction=True)


def test_many_leases_are_taken_in_one_statement_and_anothers_is_left_out():
    if connection.vendor != "postgresql":
        pytest.skip("advisory locks are PostgreSQL's; elsewhere work_leases takes them one by one")
    other = OtherWorker("job:902")
    try:
        with CaptureQueriesContext(connection) as queries:
            with work_leases(["job:901", "job:902", "job:903"]) as taken:
                assert taken == {"job:901", "job:903"}
                held = other.conn.execute("SELECT pg_try_advisory_lock(%s, %s)", _key("job:901")).fetchone()[0]
                assert held is False  # another process cannot take what the batch holds
        assert len(queries) == 2, [q["sql"] for q in queries]
        # Released at the end: another process takes them now.
        assert other.conn.execute("SELECT pg_try_advisory_lock(%s, %s)", _key("job:903")).fetchone()[0] is True
    finally:
        other.die()


def _key(name):
    from apps.core.leases import _advisory_key

    return _advisory_key(name)


def test_no_names_take_nothing():
    with CaptureQueriesContext(connection) as queries, work_leases([]) as taken:
        assert taken == set()
    assert len(queries) == 0

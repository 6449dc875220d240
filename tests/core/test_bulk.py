"""`bulk_insert`: the rows `bulk_create` would write, in one statement."""

import math

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.core.bulk import bulk_insert
from apps.sweeps.models import Sweep, Trial
from tests.factories import ClusterGrantFactory

pytestmark = pytest.mark.django_db

COMPARED = [
    "number",
    "params",
    "values",
    "system_attrs",
    "state",
    "job_id",
    "task_id",
    "objective",
    "intermediate",
    "metrics",
    "mlflow_run_id",
    "stop_reason",
    "started_at",
    "finished_at",
]


@pytest.fixture
def sweep(alice):
    grant = ClusterGrantFactory(user=alice)
    return Sweep.objects.create(
        owner=alice,
        grant=grant,
        cluster=grant.cluster,
        name="s",
        spec_text="",
        script="",
        algorithm="grid",
        max_trial_count=10,
        folder="/f",
    )


def rows(sweep, first: int, objective=None) -> list[dict]:
    from django.utils import timezone

    return [
        {
            # The object or its id, as the caller has it.
            **({"sweep": sweep} if i % 2 else {"sweep_id": sweep.pk}),
            "number": first + i,
            "params": {"lr": 0.1 * (i + 1), "name": 'a "quoted"\ttab \\ back ünï', "nested": {"l": [1, None, True]}},
            "values": {"lr": str(0.1 * (i + 1))},
            "system_attrs": {"grid_id": i} if i else {},
            "state": Trial.State.PENDING if i % 2 else Trial.State.CREATED,
            "task_id": i if i % 2 else None,
            "objective": objective if objective is not None else (None if i % 2 else 0.5 + i),
            "started_at": timezone.now() if i == 1 else None,
        }
        for i in range(4)
    ]


def test_it_writes_the_rows_bulk_create_writes_in_one_statement(sweep):
    Trial.objects.bulk_create([Trial(**row) for row in rows(sweep, 0)])
    mine = rows(sweep, 100)
    with CaptureQueriesContext(connection) as queries:
        bulk_insert(Trial, mine)
    assert len(queries) == 1
    created = list(Trial.objects.filter(sweep=sweep, number__lt=100).order_by("number").values(*COMPARED))
    inserted = list(Trial.objects.filter(sweep=sweep, number__gte=100).order_by("number").values(*COMPARED))
    for row in inserted:
        row["number"] -= 100
    for row in created + inserted:
        row.pop("started_at")
    assert inserted == created
    # Times to the microsecond, as bulk_create writes them; auto_now filled in.
    assert Trial.objects.get(sweep=sweep, number=101).started_at == mine[1]["started_at"]
    stamped = set(Trial.objects.filter(sweep=sweep, number__gte=100).values_list("updated_at", flat=True))
    assert len(stamped) == 1 and None not in stamped


def test_a_value_json_cannot_carry_falls_back_on_bulk_create(sweep):
    bulk_insert(Trial, rows(sweep, 0, objective=math.nan))
    assert Trial.objects.filter(sweep=sweep).count() == 4
    assert all(math.isnan(v) for v in Trial.objects.filter(sweep=sweep).values_list("objective", flat=True))

"""`bulk_insert`: the rows `bulk_create` would write, in one statement; `bulk_write`: the fields
`bulk_update` would write, one statement a chunk, with a compare-and-swap guard."""

import math

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from apps.core import bulk
from apps.core.bulk import bulk_insert, bulk_write
from apps.sweeps.models import Trial
from tests.factories import ClusterGrantFactory, SweepFactory

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
    return SweepFactory(grant=ClusterGrantFactory(user=alice))


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
    # One COPY, logged as a statement is.
    assert len(queries) == 1 and queries[0]["sql"].startswith('COPY "sweeps_trial" ('), queries.captured_queries
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


def test_a_float_json_cannot_carry_is_copied_as_it_is(sweep):
    with CaptureQueriesContext(connection) as queries:
        bulk_insert(Trial, rows(sweep, 0, objective=math.nan))
    assert [q["sql"][:4] for q in queries] == ["COPY"]
    assert Trial.objects.filter(sweep=sweep).count() == 4
    assert all(math.isnan(v) for v in Trial.objects.filter(sweep=sweep).values_list("objective", flat=True))


def test_a_json_value_json_cannot_carry_falls_back_on_bulk_create_which_refuses_it(sweep):
    from django.db import DataError

    nan = [{**rows(sweep, 0)[0], "metrics": {"loss": math.nan}}]
    with CaptureQueriesContext(connection) as queries, pytest.raises(DataError), transaction.atomic():
        bulk_insert(Trial, nan)
    # bulk_create's INSERT, not a COPY.
    assert [q["sql"].split()[0] for q in queries if "SAVEPOINT" not in q["sql"]] == ["INSERT"], queries.captured_queries
    assert not Trial.objects.filter(sweep=sweep).exists()


def test_the_copy_goes_through_the_connections_execute_wrappers(sweep):
    seen = []

    def wrapper(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        bulk_insert(Trial, rows(sweep, 0))
    assert len(seen) == 1 and seen[0].startswith("COPY")
    assert Trial.objects.filter(sweep=sweep).count() == 4


def test_a_copy_the_database_refuses_raises_djangos_error_and_writes_nothing(sweep):
    from django.db import IntegrityError

    bulk_insert(Trial, rows(sweep, 0))
    with pytest.raises(IntegrityError), transaction.atomic():
        bulk_insert(Trial, rows(sweep, 2))  # numbers 2 and 3 are taken
    assert Trial.objects.filter(sweep=sweep).count() == 4


WRITTEN = ["params", "values", "state", "task_id", "objective", "intermediate", "stop_reason", "started_at"]


def _changed(trials):
    from datetime import UTC, datetime, timedelta

    when = datetime(2026, 12, 1, 4, 5, 6, 789012, tzinfo=UTC)
    for i, trial in enumerate(trials):
        trial.params = {"x": i, "s": 'q"uote\\ ünï\n', "deep": [None, {"t": True}]}
        trial.values = {} if i % 2 else {"x": str(i)}
        trial.state = Trial.State.RUNNING if i % 2 else Trial.State.SUCCEEDED
        trial.task_id = None if i == 0 else i * 7
        trial.objective = None if i == 1 else 0.1 + i / 3
        trial.intermediate = {str(step): step / 10 for step in range(i)}
        trial.stop_reason = {} if i % 2 else {"rule": f"r{i} 'quoted'", "median": 0.25}
        trial.started_at = None if i == 2 else when - timedelta(microseconds=i * 123457)
    return trials


def _as_written(sweep, numbers):
    return list(Trial.objects.filter(sweep=sweep, number__in=numbers).order_by("number").values(*WRITTEN))


def test_bulk_write_writes_what_bulk_update_writes_in_one_statement_a_chunk(sweep, monkeypatch):
    bulk_insert(Trial, rows(sweep, 0) + rows(sweep, 10))
    mine = _changed(list(Trial.objects.filter(sweep=sweep, number__lt=10).order_by("number")))
    theirs = _changed(list(Trial.objects.filter(sweep=sweep, number__gte=10).order_by("number")))
    Trial.objects.bulk_update(theirs, WRITTEN)
    monkeypatch.setattr(bulk, "CHUNK", 3)  # 4 rows: two chunks
    with CaptureQueriesContext(connection) as queries:
        assert bulk_write(Trial, mine, WRITTEN) == 4
    assert len(queries) == 2 and all("jsonb_to_recordset" in q["sql"] for q in queries)
    assert _as_written(sweep, range(4)) == _as_written(sweep, range(10, 14))
    assert _as_written(sweep, range(4))[3]["started_at"] == mine[3].started_at  # to the microsecond


def test_bulk_write_writes_a_row_only_while_its_guard_holds(sweep):
    bulk_insert(Trial, rows(sweep, 0))
    trials = list(Trial.objects.filter(sweep=sweep).order_by("number"))
    expected = {t.pk: t.state for t in trials}
    Trial.objects.filter(pk=trials[0].pk).update(state=Trial.State.FAILED)  # another writer moved it
    for t in trials:
        t.stop_reason = "mine"
    assert bulk_write(Trial, trials, ["stop_reason"], only_if="state", expected=expected) == 3
    reasons = dict(Trial.objects.filter(sweep=sweep).values_list("number", "stop_reason"))
    assert reasons == {0: {}, 1: "mine", 2: "mine", 3: "mine"}


def test_bulk_write_a_value_json_cannot_carry_is_written_as_parameters(sweep):
    bulk_insert(Trial, rows(sweep, 0))
    trials = list(Trial.objects.filter(sweep=sweep).order_by("number"))
    for t in trials:
        t.objective = math.nan
    with CaptureQueriesContext(connection) as queries:
        assert bulk_write(Trial, trials, ["objective"]) == 4
    assert "VALUES" in queries[-1]["sql"]
    assert all(math.isnan(v) for v in Trial.objects.filter(sweep=sweep).values_list("objective", flat=True))


def test_a_json_fields_value_json_cannot_hold_is_refused_as_save_refuses_it(sweep):
    import decimal

    bulk_insert(Trial, rows(sweep, 0))
    trial = Trial.objects.filter(sweep=sweep).first()
    trial.params = {"lr": decimal.Decimal("0.1")}
    with pytest.raises(TypeError), transaction.atomic():
        trial.save(update_fields=["params"])
    with pytest.raises(TypeError), transaction.atomic():
        bulk_write(Trial, [trial], ["params"])
    with pytest.raises(TypeError), transaction.atomic():
        bulk_insert(Trial, [{**rows(sweep, 50)[0], "params": {"lr": decimal.Decimal("0.1")}}])


def test_a_column_json_would_not_give_back_exactly_goes_the_parameters_way():
    from django.db import models

    from apps.core.bulk import _json_can_carry

    assert not _json_can_carry(models.DurationField())  # a negative interval's ISO text is refused
    assert not _json_can_carry(models.BinaryField())
    assert _json_can_carry(models.DateTimeField()) and _json_can_carry(models.JSONField())


def test_text_with_tabs_newlines_and_backslashes_is_copied_as_bulk_create_writes_it(sweep):
    text = "tab\there\nnew line\r\\N back\\slash \"q\" 's' ünï"
    Trial.objects.bulk_create([Trial(**{**rows(sweep, 0)[0], "mlflow_run_id": text[:64]})])
    bulk_insert(Trial, [{**rows(sweep, 10)[0], "mlflow_run_id": text[:64]}])
    written = dict(Trial.objects.filter(sweep=sweep).values_list("number", "mlflow_run_id"))
    assert written == {0: text[:64], 10: text[:64]}


def test_a_nul_in_text_is_refused_as_bulk_create_refuses_it_and_nothing_is_written(sweep):
    from django.db import DataError

    with pytest.raises(DataError), transaction.atomic():
        Trial.objects.bulk_create([Trial(**{**rows(sweep, 0)[0], "mlflow_run_id": "a\x00b"})])
    with pytest.raises(DataError), transaction.atomic():
        bulk_insert(Trial, [*rows(sweep, 10), {**rows(sweep, 20)[0], "mlflow_run_id": "a\x00b"}])
    assert not Trial.objects.filter(sweep=sweep).exists()


def test_a_copy_in_a_broken_transaction_is_refused_as_a_statement_is(sweep):
    from django.db import DatabaseError
    from django.db.transaction import TransactionManagementError

    with transaction.atomic():
        try:
            with transaction.atomic(savepoint=False), connection.cursor() as cursor:
                cursor.execute("SELECT 1/0")
        except DatabaseError:
            pass
        with pytest.raises(TransactionManagementError):
            bulk_insert(Trial, rows(sweep, 0))

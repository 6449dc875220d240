"""Writing many rows' fields in a few statements.

Django's `bulk_update` builds a `CASE WHEN pk=… THEN …` per field and row in Python, which
for a tracking cycle of 10,000 jobs costs more CPU than the cycle itself. On PostgreSQL
`bulk_write` writes each chunk with one `UPDATE … FROM jsonb_to_recordset(…)` (one parameter:
the chunk as a JSON document); elsewhere it falls back on `bulk_update`.

Django's `bulk_create` adapts every field of every row as its own parameter (a sweep's 100
trials: 1,600 values, ~25 ms of Python at a light load); `bulk_insert` sends the rows with one
`COPY … FROM STDIN` (bench/README.md: 2.4–3.3 ms for 100 trials, against 5.0–7.3 ms for one
JSON document unpacked by `jsonb_to_recordset`, its way before, and 8.6–11.9 ms for a
`VALUES` list, on the same loaded 2-core machine)."""

import contextlib
import datetime
import decimal
import json
import uuid
from collections.abc import Iterable, Sequence

from django.db import connection, models
from django.utils import timezone

CHUNK = 1000


def bulk_write(
    model: type[models.Model],
    objs: Sequence[models.Model],
    names: Iterable[str],
    *,
    only_if: str | None = None,
    expected: dict | None = None,
) -> int:
    """Write the fields `names` of every obj (their in-memory values). With `only_if`, a row
    is written only while its column `only_if` still holds `expected[obj.pk]` (a
    compare-and-swap per row). Returns the number of rows written."""
    names = sorted(set(names))
    if not objs or not names:
        return 0
    if connection.vendor != "postgresql":
        if only_if:
            current = dict(model.objects.filter(pk__in=[o.pk for o in objs]).values_list("pk", only_if))
            objs = [o for o in objs if current.get(o.pk) == expected[o.pk]]
        return model.objects.bulk_update(objs, names, batch_size=CHUNK) if objs else 0
    meta = model._meta
    fields = [meta.get_field(name) for name in names]
    pk = meta.pk
    guard = meta.get_field(only_if) if only_if else None
    if not all(_json_can_carry(f) for f in [pk, *fields, *([guard] if guard else [])]):
        return _write_values(model, objs, fields, guard, expected)
    # The rows go as one JSON document a chunk (`jsonb_to_recordset`), as in bulk_insert: a
    # `VALUES` list of 1,000 rows has a parameter per value, and psycopg's client-side binding
    # scans the statement for each (~0.3 s of the hub's CPU for 10,000 jobs' states).
    documents = []
    for start in range(0, len(objs), CHUNK):
        chunk = []
        for obj in objs[start : start + CHUNK]:
            row = {"pk": _json_value(pk, obj.pk)}
            for i, f in enumerate(fields):
                row[f"v{i}"] = _json_value(f, getattr(obj, f.attname))
            if guard is not None:
                row["guard"] = _json_value(guard, expected[obj.pk])
            chunk.append(row)
        try:
            documents.append(json.dumps(chunk, allow_nan=False))
        except (TypeError, ValueError):
            # A NaN, bytes, or a JSONField's value JSON cannot hold (a Decimal, a datetime): the
            # parameters' way, which keeps the NaN and refuses the rest as save() does.
            return _write_values(model, objs, fields, guard, expected)
    quote = connection.ops.quote_name
    record = [f"pk {pk.db_type(connection)}", *(f"v{i} {f.db_type(connection)}" for i, f in enumerate(fields))]
    where = f"t.{quote(pk.column)} = v.pk"
    if guard is not None:
        record.append(f"guard {guard.db_type(connection)}")
        where += f" AND t.{quote(guard.column)} = v.guard"
    sets = ", ".join(f"{quote(f.column)} = v.v{i}" for i, f in enumerate(fields))
    sql = (
        f"UPDATE {quote(meta.db_table)} AS t SET {sets} "
        f"FROM jsonb_to_recordset(%s::jsonb) AS v({', '.join(record)}) WHERE {where}"
    )
    written = 0
    with connection.cursor() as cursor:
        for document in documents:
            cursor.execute(sql, [document])
            written += cursor.rowcount
    return written


def _write_values(model, objs, fields, guard, expected) -> int:
    """bulk_write with one `UPDATE … FROM (VALUES …)` a chunk, each value its own parameter:
    for what JSON cannot carry exactly."""
    meta = model._meta
    pk = meta.pk
    table = connection.ops.quote_name(meta.db_table)
    quote = connection.ops.quote_name
    columns = [pk, *fields]
    cast = [f"%s::{f.db_type(connection)}" for f in columns]
    value_names = ["pk", *[f"v{i}" for i in range(len(fields))]]
    if guard is not None:
        cast.append(f"%s::{guard.db_type(connection)}")
        value_names.append("guard")
    row_sql = "(" + ", ".join(cast) + ")"
    sets = ", ".join(f"{quote(f.column)} = v.v{i}" for i, f in enumerate(fields))
    where = f"t.{quote(pk.column)} = v.pk"
    if guard is not None:
        where += f" AND t.{quote(guard.column)} = v.guard"
    written = 0
    with connection.cursor() as cursor:
        for start in range(0, len(objs), CHUNK):
            chunk = objs[start : start + CHUNK]
            params: list = []
            for obj in chunk:
                params.append(pk.get_db_prep_value(obj.pk, connection))
                for f in fields:
                    params.append(f.get_db_prep_save(getattr(obj, f.attname), connection))
                if guard is not None:
                    params.append(guard.get_db_prep_value(expected[obj.pk], connection))
            sql = (
                f"UPDATE {table} AS t SET {sets} FROM (VALUES {', '.join([row_sql] * len(chunk))}) "
                f"AS v({', '.join(value_names)}) WHERE {where}"
            )
            cursor.execute(sql, params)
            written += cursor.rowcount
    return written


#: Columns a JSON document carries exactly: their values are JSON's own types, or text
#: PostgreSQL reads back as the same value (a time to the microsecond, a decimal, a UUID).
_JSON_READY = (
    models.AutoField,
    models.BigAutoField,
    models.SmallAutoField,
    models.IntegerField,
    models.BooleanField,
    models.CharField,
    models.TextField,
    models.FloatField,
    models.DecimalField,
    models.UUIDField,
    models.DateTimeField,
    models.DateField,
    models.TimeField,
    models.ForeignKey,
)


def _json_can_carry(field) -> bool:
    if isinstance(field, models.JSONField):
        return field.encoder is None
    return isinstance(field, _JSON_READY)


# JSON as json.dumps writes it, refusing a NaN (PostgreSQL's jsonb has none): one encoder for
# all (json.dumps with allow_nan=False makes one a call).
_JSON = json.JSONEncoder(allow_nan=False)
# Django's own classes, whose `get_prep_value` gives an int back as it is (a subclass of a
# project's may not: it takes `_json_value`'s way).
_INTEGERS = frozenset(
    {
        models.IntegerField,
        models.BigIntegerField,
        models.SmallIntegerField,
        models.PositiveIntegerField,
        models.PositiveBigIntegerField,
        models.PositiveSmallIntegerField,
        models.AutoField,
        models.BigAutoField,
        models.SmallAutoField,
    }
)
_TEXTS = frozenset({models.CharField, models.TextField})


def _copier(field):
    """How a field's value becomes what `COPY`'s text gives PostgreSQL (psycopg escapes the
    text): None as NULL; a JSONField's as its JSON (refused as json.dumps refuses what Django's
    would: ValueError, TypeError); an int for an integer column and a str for a text one as
    they are; the others as `_json_value` makes them."""
    if isinstance(field, models.JSONField):
        return lambda value: None if value is None else _JSON.encode(value)
    target = field.target_field if isinstance(field, models.ForeignKey) else field
    same = None
    if type(target) in _INTEGERS:
        same = int
    elif type(target) in _TEXTS:
        same = str

    def copied(value):
        if value is None:
            return None
        if type(value) is same:
            return value
        return _json_value(field, value)

    return copied


def _json_value(field, value):
    """A field's value as the JSON document carries it: a JSONField's as it is (json.dumps
    refuses what Django's would), the others as their database values, times and decimals as
    text."""
    if isinstance(field, models.JSONField):
        return value
    value = field.get_prep_value(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    return value


def bulk_insert(model: type[models.Model], rows: Sequence[dict]) -> None:
    """Insert new rows, each a dict of field attnames (`sweep_id`, or `sweep` for the object)
    to values, the others taking their defaults and `auto_now` times, with one `COPY … FROM
    STDIN`: what `bulk_create` of `model(**row)` writes, without making a model instance per
    row. Primary keys are the database's, not returned. The COPY goes through the
    connection's execute wrappers and, when queries are logged, into its log, as a statement
    does. Elsewhere than on PostgreSQL, or for a column whose text COPY would not read back
    exactly or a JSONField value JSON cannot hold (a NaN, an encoder of its own), it is
    `bulk_create`."""
    if not rows:
        return
    meta = model._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]

    def fallback() -> None:
        model.objects.bulk_create([model(**row) for row in rows], batch_size=CHUNK)

    if connection.vendor != "postgresql" or not all(_json_can_carry(f) for f in fields):
        fallback()
        return
    quote = connection.ops.quote_name
    sql = f"COPY {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) FROM STDIN"
    now = timezone.now()
    defaults = {}
    for f in fields:
        if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
            defaults[f.attname] = now
        elif f.has_default() or not f.null:
            defaults[f.attname] = f.get_default()
        else:
            defaults[f.attname] = None
    try:
        # Each default converted once, and each row's own values on top (a row names a few of
        # the columns): not one conversion per column and row.
        copiers = [_copier(f) for f in fields]
        base = [copy(defaults[f.attname]) for f, copy in zip(fields, copiers, strict=True)]
        # A row's key -> the column's place, its copier, and for an object's name (`sweep`) the
        # column it stands for (`sweep_id`).
        at = {f.attname: (i, copiers[i], None) for i, f in enumerate(fields)}
        at.update(
            (f.name, (i, copiers[i], f.attname))
            for i, f in enumerate(fields)
            if f.name != f.attname and f.name not in at
        )
        lines = []
        for row in rows:
            out = list(base)
            for key, value in row.items():
                i, copy, attname = at.get(key, (None, None, None))
                if copy is None or (attname is not None and attname in row):
                    continue  # not a column, or the object of a column the row gives by its id
                if attname is not None and value is not None:
                    value = value.pk
                out[i] = copy(value)
            lines.append(out)
    except (TypeError, ValueError):  # as in bulk_write: bulk_create keeps or refuses it
        fallback()
        return

    def write(sql, params, many, context):
        with context["cursor"].cursor.copy(sql) as stream:
            for line in lines:
                stream.write_row(line)

    connection.validate_no_broken_transaction()  # as a statement's execute does
    with connection.cursor() as cursor, connection.wrap_database_errors:
        with cursor.debug_sql(sql) if connection.queries_logged else contextlib.nullcontext():
            cursor._execute_with_wrappers(sql, None, False, executor=write)

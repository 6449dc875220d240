"""Recording audit events. Every write in Axle calls ``audit_record`` inside the transaction
that makes the change, so the change and its record commit or roll back together."""

import json
import logging
import uuid as uuid_lib
from typing import Any

from django.contrib.auth import get_user_model
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, models, transaction
from django.db.transaction import TransactionManagementError
from django.utils import timezone

from apps.core import context
from apps.core.bulk import bulk_insert

from . import keys as audit_keys
from .chain import CURRENT_VERSION, GENESIS, Verification, event_hash
from .checkpoints import Checkpoint, checkpoint_append, checkpoint_line_append, checkpoint_sign
from .models import AuditChainHead, AuditEvent

log = logging.getLogger(__name__)

# An event's columns as `bulk_insert` takes them (the primary key is the database's).
_COLUMNS = [f.attname for f in AuditEvent._meta.concrete_fields if not f.primary_key]


def _plain(data: Any) -> Any:
    # Store exactly what was hashed: JSON round-tripping turns datetimes, uuids and decimals
    # into the strings the database will hand back later.
    if data is None:
        return None
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def _subject_fields(subject: models.Model | None) -> dict:
    if subject is None:
        return {}
    public_id = getattr(subject, "uuid", None) or subject.pk
    return {
        "subject_type": subject._meta.label_lower,
        "subject_id": str(public_id),
        "subject_text": str(subject)[:255],
    }


def _head_sql(sql: str, params: list | None = None) -> tuple | None:
    """One statement on the chain's head row, in SQL of its own: every audited change runs
    these two (its lock and its move), and the ORM's compiling of them cost as much again as
    the database's answer (0.9-1.1 ms against 0.4-0.5 ms for both). `{table}` is the head's
    table; on PostgreSQL `{lock}` is FOR UPDATE (SQLite takes its lock at BEGIN IMMEDIATE)."""
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    table = connection.ops.quote_name(AuditChainHead._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(sql.format(table=table, lock=lock), params)
        return cursor.fetchone() if cursor.description else None


def _head_column(name: str) -> str:
    return connection.ops.quote_name(AuditChainHead._meta.get_field(name).column)


_HEAD_FIELDS = ("seq", "hash", "legacy_boundary")


def _locked_head() -> AuditChainHead:
    """The head row, locked until the transaction ends: appends are serialized on it. Only
    inside a transaction (as the ORM's select_for_update requires): a lock taken in autocommit
    would end with its statement."""
    if not connection.in_atomic_block:
        raise TransactionManagementError("The audit chain's head is locked only inside a transaction.")
    columns = ", ".join(_head_column(name) for name in _HEAD_FIELDS)
    select = f"SELECT {columns} FROM {{table}} WHERE {_head_column('id')} = 1{{lock}}"
    row = _head_sql(select)
    if row is None:
        # The migration creates the head; only an emptied database (a test flush) lacks it.
        AuditChainHead.objects.bulk_create([AuditChainHead(pk=1)], ignore_conflicts=True)
        row = _head_sql(select)
    return AuditChainHead(pk=1, **dict(zip(_HEAD_FIELDS, row, strict=True)))


def _head_move(moved: dict) -> None:
    """Move the head onto the last event (`seq`, `hash`, and the legacy boundary when signed)."""
    columns = ", ".join(f"{_head_column(name)} = %s" for name in moved)
    _head_sql(f"UPDATE {{table}} SET {columns} WHERE {_head_column('id')} = 1", list(moved.values()))


def audit_record(
    *,
    action: str,
    subject: models.Model | None = None,
    actor=None,
    before: dict | None = None,
    after: dict | None = None,
    subject_type: str = "",
    subject_id: str = "",
    subject_text: str = "",
) -> AuditEvent:
    """Append one event to the chain.

    ``actor`` defaults to whoever the current request or task acts for; None there means the
    system itself. Appends are serialized on the chain head row (a row lock on PostgreSQL,
    BEGIN IMMEDIATE on SQLite) so concurrent writers never fork the chain."""
    ctx = context.current()
    if actor is None and ctx.actor_id is not None:
        actor = get_user_model().objects.filter(pk=ctx.actor_id).first()
    fields = {"subject_type": subject_type, "subject_id": subject_id, "subject_text": subject_text[:255]}
    fields.update(_subject_fields(subject))
    key_id, key = audit_keys.current()
    # Milliseconds: what every database and Django's JSON serializer keep (see chain.py).
    now = timezone.now()
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    # No savepoint of its own inside the caller's transaction (two round trips saved per
    # append): an error here rolls the caller's whole transaction back, as it must, since the
    # change must not commit without its event.
    with transaction.atomic(savepoint=False):
        head = _locked_head()
        event = AuditEvent(
            seq=head.seq + 1,
            uuid=uuid_lib.uuid4(),
            created_at=now,
            version=CURRENT_VERSION,
            key_id=key_id,
            actor=actor,
            actor_username=actor.get_username() if actor is not None else "",
            action=action,
            request_id=ctx.request_id,
            before=_plain(before),
            after=_plain(after),
            prev_hash=head.hash,
            **fields,
        )
        event.hash = event_hash(event, head.hash, {key_id: key})
        event.save(force_insert=True)
        moved = {"seq": event.seq, "hash": event.hash}
        if not head.legacy_boundary and not AuditEvent.objects.filter(version__gte=2, seq__lt=event.seq).exists():
            # The chain's first keyed event: from here on an unkeyed event is a forgery.
            moved["legacy_boundary"] = _legacy_boundary_sign(seq=head.seq, hash_=head.hash)
        _head_move(moved)
    return event


def audit_record_many(entries: list[dict]) -> list[AuditEvent]:
    """Append many events to the chain at once, in the order given, with one lock of the
    chain head, one `COPY` of the events (`bulk_insert`; their primary keys are not read back)
    and one head update: still one chain, each event linked to the one before it exactly as
    `audit_record` links them.

    Each entry takes `audit_record`'s keyword arguments (action, subject, actor, before,
    after, subject_type/id/text). Used where one operation moves many rows at once (a
    batch of submissions, a tracking cycle)."""
    if not entries:
        return []
    ctx = context.current()
    default_actor = None
    if ctx.actor_id is not None and any(e.get("actor") is None for e in entries):
        default_actor = get_user_model().objects.filter(pk=ctx.actor_id).first()
    key_id, key = audit_keys.current()
    keys = {key_id: key}
    now = timezone.now()
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    with transaction.atomic(savepoint=False):  # as in audit_record
        head = _locked_head()
        prev_hash, seq = head.hash, head.seq
        first_prev = (head.seq, head.hash)
        events = []
        for entry in entries:
            actor = entry.get("actor") or default_actor
            fields = {
                "subject_type": entry.get("subject_type", ""),
                "subject_id": entry.get("subject_id", ""),
                "subject_text": entry.get("subject_text", "")[:255],
            }
            fields.update(_subject_fields(entry.get("subject")))
            seq += 1
            event = AuditEvent(
                seq=seq,
                uuid=uuid_lib.uuid4(),
                created_at=now,
                version=CURRENT_VERSION,
                key_id=key_id,
                actor=actor,
                actor_username=actor.get_username() if actor is not None else "",
                action=entry["action"],
                request_id=ctx.request_id,
                before=_plain(entry.get("before")),
                after=_plain(entry.get("after")),
                prev_hash=prev_hash,
                **fields,
            )
            event.hash = event_hash(event, prev_hash, keys)
            prev_hash = event.hash
            events.append(event)
        # The rows of the events as built and hashed: what is stored is what was signed.
        bulk_insert(AuditEvent, [{name: getattr(event, name) for name in _COLUMNS} for event in events])
        moved = {"seq": seq, "hash": prev_hash}
        if not head.legacy_boundary and not AuditEvent.objects.filter(version__gte=2, seq__lte=first_prev[0]).exists():
            moved["legacy_boundary"] = _legacy_boundary_sign(seq=first_prev[0], hash_=first_prev[1])
        _head_move(moved)
    return events


def _legacy_boundary_sign(*, seq: int, hash_: str) -> str:
    """Sign the boundary and append it to the checkpoint file; the caller keeps it in the head
    row. A file that cannot be written is logged, not fatal: audit_verify reports it."""
    line = checkpoint_sign(seq=seq, hash_=hash_, legacy=True)
    try:
        checkpoint_line_append(line)
    except OSError as exc:
        log.error("Audit legacy boundary not written to %s: %s", exc.filename, exc.strerror)
    return line


def audit_legacy_boundary_record(*, events=None, heads=None) -> str:
    """Sign where an existing trail's unkeyed (version-1) events end, in the head row and the
    checkpoint file; for trails begun before this was recorded (migration 0003). ``events`` and
    ``heads`` are the managers to use (a migration passes its historical models')."""
    events = AuditEvent.objects if events is None else events
    heads = AuditChainHead.objects if heads is None else heads
    last_unkeyed = events.filter(version=1).order_by("-seq").values_list("seq", "hash").first()
    seq, hash_ = last_unkeyed or (0, GENESIS)
    line = _legacy_boundary_sign(seq=seq, hash_=hash_)
    if not heads.filter(pk=1, legacy_boundary="").update(legacy_boundary=line):
        if not heads.filter(pk=1).exists():
            heads.create(pk=1, legacy_boundary=line)
    return line


def audit_checkpoint_write(*, verification: Verification) -> Checkpoint | None:
    """Sign the chain's end as ``verification`` found it into the checkpoint file.

    Only a chain that verified is signed: a checkpoint must never bless a tampered state.
    Nothing is written when the newest checkpoint already says the same."""
    from .checkpoints import checkpoint_list

    if not verification.ok or verification.count == 0:
        return None
    existing = checkpoint_list()
    if existing and (existing[-1].seq, existing[-1].hash) == (verification.count, verification.head_hash):
        return existing[-1]
    return checkpoint_append(seq=verification.count, hash_=verification.head_hash)

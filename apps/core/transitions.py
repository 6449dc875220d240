"""The one way a stateful row changes state: compare-and-swap, audited in the same transaction."""

from collections.abc import Mapping

from django.db import models, transaction
from django.utils import timezone

from . import audit_hook
from .bulk import bulk_write
from .errors import Conflict


def transition(
    *,
    obj: models.Model,
    to: str,
    transitions: Mapping[str, set[str] | frozenset[str]],
    action: str,
    actor=None,
    fields: dict | None = None,
    data: dict | None = None,
    field: str = "status",
) -> models.Model:
    """Move ``obj`` from its current state to ``to``, or raise Conflict.

    The UPDATE only matches while the row is still in the state we read, so of two workers
    (or two clicks) racing, exactly one wins and the other gets Conflict, never a silent
    overwrite."""
    old = getattr(obj, field)
    if to not in transitions.get(old, ()):
        raise Conflict(f"Cannot go from {old} to {to}.")
    values = {field: to, **(fields or {})}
    if any(f.name == "updated_at" for f in obj._meta.fields):
        values.setdefault("updated_at", timezone.now())
    with transaction.atomic():
        changed = type(obj).objects.filter(pk=obj.pk, **{field: old}).update(**values)
        if changed != 1:
            raise Conflict(f"{obj._meta.verbose_name.capitalize()} changed meanwhile; it is no longer {old}.")
        for name, value in values.items():
            setattr(obj, name, value)
        audit_hook.record(
            action=action,
            subject=obj,
            actor=actor,
            before={field: old},
            after={field: to, **(data or {})},
        )
    return obj


def transition_many(
    *,
    model: type[models.Model],
    changes: list[tuple[models.Model, dict, dict | None]],
    to: str,
    transitions: Mapping[str, set[str] | frozenset[str]],
    action: str,
    actor=None,
    field: str = "status",
) -> list[models.Model]:
    """`transition` for many rows in one transaction and a few statements: lock the rows
    still in the state each was read in (others changed meanwhile and are left out, as
    `transition` would raise Conflict for them), write every row's fields with one
    bulk UPDATE, and append all audit events to the chain at once.

    `changes` holds (obj, fields, data) per row; returns the objects that moved."""
    if not changes:
        return []
    for obj, _, _ in changes:
        old = getattr(obj, field)
        if to not in transitions.get(old, ()):
            raise Conflict(f"Cannot go from {old} to {to}.")
    has_updated_at = any(f.name == "updated_at" for f in model._meta.fields)
    now = timezone.now()
    # No savepoint inside a caller's transaction: nothing here raises for the caller to catch
    # and go on (a Conflict is raised above, before it), and a database error must roll the
    # caller's transaction back.
    with transaction.atomic(savepoint=False):
        current = dict(
            model.objects.select_for_update().filter(pk__in=[obj.pk for obj, _, _ in changes]).values_list("pk", field)
        )
        moved, entries, names = [], [], {field}
        for obj, fields, data in changes:
            old = getattr(obj, field)
            if current.get(obj.pk) != old:
                continue
            values = {field: to, **(fields or {})}
            if has_updated_at:
                values.setdefault("updated_at", now)
            names.update(values)
            for name, value in values.items():
                setattr(obj, name, value)
            moved.append(obj)
            entries.append(
                {
                    "action": action,
                    "subject": obj,
                    "actor": actor,
                    "before": {field: old},
                    "after": {field: to, **(data or {})},
                }
            )
        if moved:
            bulk_write(model, moved, names)
            audit_hook.record_many(entries)
    return moved

"""The one way a stateful row changes state: compare-and-swap, audited in the same transaction."""

from collections.abc import Mapping

from django.db import models, transaction
from django.utils import timezone

from . import audit_hook
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

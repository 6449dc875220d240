"""An audit event's change as a person reads it: one row per field, before → after."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ChangeRow:
    field: str
    before: str  # "" when the field was not there
    after: str  # "" when the field is gone
    kind: str  # "changed", "added", "removed" or "same"


def _shown(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value or '""'
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return ", ".join(str(v) for v in value) if value else "(none)"
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def change_rows(before: Any, after: Any) -> list[ChangeRow]:
    """The fields of ``before`` and ``after`` side by side, in their order (before's first).
    Values that are not objects are one row named "value"."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        if before in (None, {}) and isinstance(after, dict):
            before = {}
        elif after in (None, {}) and isinstance(before, dict):
            after = {}
        else:
            before = {} if before is None else {"value": before}
            after = {} if after is None else {"value": after}
    rows = []
    for key in [*before, *(k for k in after if k not in before)]:
        if key in before and key in after:
            kind = "same" if before[key] == after[key] else "changed"
            rows.append(ChangeRow(str(key), _shown(before[key]), _shown(after[key]), kind))
        elif key in after:
            rows.append(ChangeRow(str(key), "", _shown(after[key]), "added"))
        else:
            rows.append(ChangeRow(str(key), _shown(before[key]), "", "removed"))
    return rows

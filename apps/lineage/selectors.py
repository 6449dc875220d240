"""Reads for lineage: the graph around one node, with only what the user may see."""

from __future__ import annotations

import uuid

from apps.core.errors import NotFound, ValidationFailed

from .graph import KINDS, MAX_NODES, Graph, walk


def lineage_kinds() -> list[str]:
    return sorted(KINDS)


def lineage(*, user, kind: str, id, max_nodes: int = MAX_NODES) -> Graph:
    """What the node `kind:id` came from and what came from it.

    Raises ValidationFailed for a kind nobody registered, NotFound for an id that does not
    exist or that the user may not see (the two answer alike)."""
    resolve = KINDS.get(kind)
    if resolve is None:
        raise ValidationFailed(f"Unknown kind {kind!r}; use one of {', '.join(lineage_kinds())}.")
    try:
        key = id if isinstance(id, uuid.UUID) else uuid.UUID(str(id))
    except ValueError:
        raise NotFound(f"No {kind.replace('_', ' ')} {id}.") from None
    focus = resolve(user=user, id=key)
    if focus is None:
        raise NotFound(f"No {kind.replace('_', ' ')} {id}.")
    return walk(user=user, focus=focus, max_nodes=max_nodes)

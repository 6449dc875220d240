"""Where model versions are live ("live in production"), shown on the registry's pages.

Serving sits above the registry, so the registry cannot ask it directly: serving registers
the function that answers (in its AppConfig.ready), as it registers its lineage provider.
Without serving installed, nothing is live anywhere."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.db.models import QuerySet


@dataclass(frozen=True)
class Placement:
    environment: str
    url: str  # the deployment's page
    model_id: int
    number: int  # the version's


LiveProvider = Callable[[QuerySet], dict[int, list[Placement]]]
_provider: LiveProvider | None = None


def register_live_provider(provider: LiveProvider) -> None:
    global _provider
    _provider = provider


def live_placements(versions: QuerySet) -> dict[int, list[Placement]]:
    """{version pk: where it is live} for the versions of a queryset, in one query whatever
    their number."""
    if _provider is None:
        return {}
    return _provider(versions)


def live_by_model(placements: dict[int, list[Placement]]) -> dict[int, list[Placement]]:
    by_model: dict[int, list[Placement]] = {}
    for rows in placements.values():
        for p in rows:
            by_model.setdefault(p.model_id, []).append(p)
    for rows in by_model.values():
        rows.sort(key=lambda p: (p.environment, p.number))
    return by_model

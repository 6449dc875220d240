"""Reads for sweeps. A sweep belongs to its team: a member sees it; nobody else learns it exists."""

from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet

from apps.accounts.teams import team_owned
from apps.core.errors import NotFound

from .models import Sweep, Trial


def sweep_list(*, user, status: str = "") -> QuerySet[Sweep]:
    rows = Sweep.objects.filter(Q(owner=user) | Q(pk__in=team_owned(Sweep.objects.all(), user=user).values("pk")))
    if status == "active":
        rows = rows.exclude(status__in=Sweep.TERMINAL)
    elif status:
        rows = rows.filter(status=status)
    return rows.select_related("cluster", "owner", "team").order_by("-created_at")


def sweep_get(*, user, sweep_id) -> Sweep:
    try:
        sweep = sweep_list(user=user).filter(uuid=sweep_id).first()
    except ValidationError:
        sweep = None
    if sweep is None:
        raise NotFound("No such sweep.")
    return sweep


def trial_list(*, sweep: Sweep) -> QuerySet[Trial]:
    return sweep.trials.select_related("job").order_by("number")


def best_so_far(*, sweep: Sweep, maximize: bool) -> list[dict]:
    """Each ended trial's objective in trial order, with the best value up to it."""
    points, best = [], None
    for number, value in (
        sweep.trials.filter(objective__isnull=False).order_by("number").values_list("number", "objective")
    ):
        if best is None or (value > best if maximize else value < best):
            best = value
        points.append({"trial": number, "objective": value, "best": best})
    return points


def parallel_coordinates(*, sweep: Sweep, names: list[str]) -> dict:
    """Every trial with an objective as one line across the parameters and the objective."""
    rows = sweep.trials.filter(objective__isnull=False).order_by("number").values_list("number", "params", "objective")
    return {
        "axes": names,
        "lines": [
            {"trial": n, "values": [params.get(name) for name in names], "objective": v} for n, params, v in rows
        ],
    }

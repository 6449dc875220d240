"""Reads for the model registry. A user sees the models of the teams they belong to."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from apps.accounts.models import Team
from apps.accounts.teams import team_asset_list, team_owned, team_owned_get
from apps.core.errors import NotFound
from apps.core.models import parse_uuid
from apps.jobs.models import Job
from apps.sweeps.models import Trial
from apps.sweeps.selectors import sweep_get

from .models import ModelVersion, RegisteredModel


def visible_jobs(*, user) -> QuerySet[Job]:
    """Jobs whose models the user may register and whose lineage they may see: their own, and
    their teams' (a teammate's job is where a team's model comes from)."""
    team_ids = Team.objects.filter(memberships__user=user).values("pk")
    return Job.objects.filter(Q(owner=user) | Q(team__in=team_ids))


def job_for_registration(*, user, id) -> Job:
    u = parse_uuid(id)
    job = visible_jobs(user=user).filter(uuid=u).select_related("team", "owner").first() if u else None
    if job is None:
        raise NotFound(f"No job {id} of yours or your teams'.")
    return job


def trial_for_registration(*, user, sweep_id, number) -> Trial:
    """A trial of a sweep the user may see, by the sweep's uuid and the trial's number."""
    sweep = sweep_get(user=user, sweep_id=sweep_id)
    try:
        trial = sweep.trials.select_related("job", "sweep").filter(number=int(number)).first()
    except (TypeError, ValueError):
        trial = None
    if trial is None:
        raise NotFound(f"Sweep {sweep.name} has no trial {str(number)[:20]}.")
    return trial


def registered_model_list(*, user, team: str = "", q: str = "") -> QuerySet[RegisteredModel]:
    return team_asset_list(RegisteredModel.objects.all(), user=user, team=team, q=q)


def registered_model_get(*, user, name: str) -> RegisteredModel:
    return team_owned_get(
        RegisteredModel.objects.filter(name=name), user=user, missing=f"No model named {name!r} in your teams."
    )


def model_version_list(*, user, model: RegisteredModel) -> QuerySet[ModelVersion]:
    return (
        team_owned(ModelVersion.objects.filter(model=model), user=user, via="model__team")
        .select_related("model", "job", "created_by")
        .order_by("-number")
    )


def model_version_get(*, user, id) -> ModelVersion:
    return team_owned_get(
        ModelVersion.objects.filter(uuid=parse_uuid(id)),
        user=user,
        missing="No such model version.",
        via="model__team",
        related=("model__team", "job", "created_by"),
    )


def model_version_by_number(*, user, model: RegisteredModel, number: int) -> ModelVersion:
    version = model_version_list(user=user, model=model).filter(number=number).first()
    if version is None:
        raise NotFound(f"Model {model.name} has no version {number}.")
    return version


def metric_columns(versions, limit: int = 12) -> list[str]:
    """The metric names to show side by side: those most versions have, then by name."""
    counts: dict[str, int] = {}
    for v in versions:
        for key in v.metrics or {}:
            counts[key] = counts.get(key, 0) + 1
    return sorted(sorted(counts, key=lambda k: (-counts[k], k))[:limit])

"""One pattern for the things a team owns: datasets and registered models today, sweeps and
pipelines next. A member of the team sees and adds to them; nobody else learns they exist.

An asset is a model with ``team``, ``name``, ``description``, ``created_by`` and numbered
``versions``. Its app uses:

- selectors: ``team_asset_list`` (the list with version counts), ``team_owned_get`` (one row,
  or NotFound) and ``team_owned(queryset, user=…, via="…__team")`` for a row of the asset or
  below it (a version);
- services: ``team_member_require(user=…, team=…)`` before anything is made in a team, then
  ``team_asset_create`` (created and audited at once);
- pages: ``apps.accounts.team_views.TeamAssetListView`` (list, filter and "New …" form on the
  layout ``templates/teams/asset_list.html``) and ``found_or_404``;
- admin: ``apps.accounts.team_admin.TeamAssetAdmin``, read-only;
- API: ``TeamField`` (a team by name or id, among the user's teams) and
  ``apps.accounts.team_api``."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import IntegrityError, transaction
from django.db.models import Count, Max, Model, QuerySet
from rest_framework import serializers

from apps.audit.services import audit_record
from apps.core.errors import ApplicationError, NotFound, PermissionDenied, ValidationFailed

from .models import Membership, Team
from .selectors import team_choices, team_get

__all__ = [
    "TeamField",
    "is_team_member",
    "team_asset_create",
    "team_owned_get",
    "team_asset_list",
    "team_choices",
    "team_get",
    "team_initial",
    "team_member_require",
    "team_owned",
    "team_pick",
]


def team_default(user) -> Team | None:
    """The team work is filed under when the user names none: the first they joined."""
    membership = user.memberships.select_related("team").order_by("created_at").first()
    return membership.team if membership else None


def is_team_member(*, user, team: Team | None) -> bool:
    return team is not None and Membership.objects.filter(user=user, team=team).exists()


def team_member_require(*, user, team: Team) -> None:
    if not is_team_member(user=user, team=team):
        raise PermissionDenied(f"You are not a member of team {team.name}.")


def team_owned(queryset: QuerySet, *, user, via: str = "team", team: str = "") -> QuerySet:
    """The rows of ``queryset`` whose team (reached through ``via``) has ``user`` as a member,
    optionally only those of the team named ``team``."""
    rows = queryset.filter(**{f"{via}__memberships__user": user})
    if team:
        rows = rows.filter(**{f"{via}__name": team})
    return rows


def team_asset_list(
    queryset: QuerySet, *, user, team: str = "", q: str = "", order_by: Sequence[str] = ("name",)
) -> QuerySet:
    """The assets of ``queryset`` in the user's teams (or the team named ``team``) whose name
    holds ``q``, with ``version_count`` and ``latest_number``."""
    assets = team_owned(queryset, user=user, team=team)
    if q:
        assets = assets.filter(name__icontains=q)
    return (
        assets.select_related("team", "created_by")
        .annotate(version_count=Count("versions"), latest_number=Max("versions__number"))
        .order_by(*order_by)
    )


def team_owned_get(
    queryset: QuerySet,
    *,
    user,
    missing: str,
    via: str = "team",
    related: Sequence[str] = ("team", "created_by"),
) -> Model:
    """The one row of ``queryset`` (an asset, or with ``via`` a row below one) in the user's
    teams; NotFound saying ``missing`` when there is none, also when another team has it."""
    row = team_owned(queryset, user=user, via=via).select_related(*related).first()
    if row is None:
        raise NotFound(missing)
    return row


def team_asset_create(
    model: type[Model], *, user, team: Team, name: str, description: str, action: str, taken: ApplicationError
) -> Model:
    """Create an asset in ``team`` and audit it as ``action``. The caller has checked first
    that ``user`` is a member (``team_member_require``) and that ``name`` is valid and free;
    ``taken`` is raised when a concurrent request took the name meanwhile."""
    try:
        with transaction.atomic():
            asset = model.objects.create(team=team, name=name, description=(description or "").strip(), created_by=user)
            audit_record(
                action=action,
                subject=asset,
                actor=user,
                after={"team": team.name, "name": name, "description": asset.description},
            )
    except IntegrityError:
        raise taken from None
    return asset


def team_initial(teams: Sequence[Team]) -> str:
    """What a create form preselects: the team, when the user is in exactly one."""
    return teams[0].name if len(teams) == 1 else ""


def team_pick(*, teams: Sequence[Team], name: str) -> Team:
    """The team a create form named, among those it offered."""
    team = next((t for t in teams if t.name == name), None)
    if team is None:
        raise ValidationFailed("Pick one of your teams.")
    return team


class TeamField(serializers.CharField):
    """A team by name or id, one of the requesting user's; the serializer needs the request in
    its context. A team the user is not in answers 404, as if it did not exist."""

    plain_text = True  # documented like a CharField (apps.core.schema): no NUL characters

    def __init__(self, **kwargs):
        kwargs.setdefault("help_text", "Team name or id; you must be a member")
        super().__init__(**kwargs)

    def to_internal_value(self, data) -> Team:
        ident = super().to_internal_value(data)
        if "\x00" in ident:  # CharField's own check runs after this lookup, too late
            raise serializers.ValidationError("Null characters are not allowed.")
        return team_get(user=self.context["request"].user, ident=ident)

    def to_representation(self, value) -> str:
        return value.name if isinstance(value, Team) else str(value)

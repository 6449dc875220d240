"""One pattern for the things a team owns: datasets and registered models today, sweeps and
pipelines next. A member of the team sees and adds to them; nobody else learns they exist.

- selectors filter with ``team_owned(queryset, user=…, via="team")``;
- services check ``team_member_require(user=…, team=…)`` before creating in a team;
- the API takes the team as ``TeamField`` (a name or id, resolved among the user's teams);
- a page's create form offers ``team_choices`` and reads the pick back with ``team_pick``."""

from __future__ import annotations

from collections.abc import Sequence

from django.db.models import QuerySet
from rest_framework import serializers

from apps.core.errors import PermissionDenied, ValidationFailed

from .models import Membership, Team
from .selectors import team_choices, team_get

__all__ = [
    "TeamField",
    "is_team_member",
    "team_choices",
    "team_get",
    "team_initial",
    "team_member_require",
    "team_owned",
    "team_pick",
]


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

    def __init__(self, **kwargs):
        kwargs.setdefault("help_text", "Team name or id; you must be a member")
        super().__init__(**kwargs)

    def to_internal_value(self, data) -> Team:
        ident = super().to_internal_value(data)
        return team_get(user=self.context["request"].user, ident=ident)

    def to_representation(self, value) -> str:
        return value.name if isinstance(value, Team) else str(value)

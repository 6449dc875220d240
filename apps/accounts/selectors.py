from django.db.models import QuerySet
from django.utils import timezone

from apps.core.errors import NotFound
from apps.core.models import parse_uuid

from .models import ApiToken, Membership, Team, User
from .services import hash_token_key


def token_list(*, user: User) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=user).order_by("revoked_at", "-created_at")


def token_authenticate(*, key: str) -> ApiToken | None:
    token = (
        ApiToken.objects.select_related("user").filter(key_hash=hash_token_key(key), revoked_at__isnull=True).first()
    )
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    # Touch last_used_at at most once a minute so a busy script does not write on every call.
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


def membership_list(*, user: User) -> QuerySet[Membership]:
    return Membership.objects.filter(user=user).select_related("team")


def team_choices(*, user) -> QuerySet[Team]:
    """The teams a user may create things in."""
    return Team.objects.filter(memberships__user=user).order_by("name")


def team_get(*, user, ident: str) -> Team:
    """One of the user's teams, by name or id."""
    teams = team_choices(user=user)
    team = teams.filter(name=ident).first()
    if team is None and (u := parse_uuid(ident)):
        team = teams.filter(uuid=u).first()
    if team is None:
        raise NotFound(f"You are not in a team {ident!r}.")
    return team

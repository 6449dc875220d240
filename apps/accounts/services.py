import hashlib
import secrets

from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.core.errors import NotFound, ValidationFailed

from .models import ApiToken, Membership, Team, User

TOKEN_PREFIX = "axle_"


def hash_token_key(key: str) -> str:
    # The key carries 256 random bits, so a plain sha256 cannot be brute-forced; a slow
    # password hash would only make every API call slower.
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def token_create(*, user: User, name: str) -> tuple[ApiToken, str]:
    """Create a token and return it with its key; the key is never retrievable again."""
    name = (name or "").strip()
    if not name:
        raise ValidationFailed("Give the token a name, so you can tell it apart later.")
    if len(name) > 100:
        raise ValidationFailed("A token name can be at most 100 characters.")
    key = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user, name=name, prefix=key[: len(TOKEN_PREFIX) + 6], key_hash=hash_token_key(key)
        )
        audit_record(action="token.created", subject=token, actor=user, after={"name": name, "prefix": token.prefix})
    return token, key


def token_revoke(*, user: User, token_uuid) -> ApiToken:
    with transaction.atomic():
        token = ApiToken.objects.select_for_update().filter(user=user, uuid=token_uuid).first()
        if token is None:
            raise NotFound("No such token.")
        if token.revoked_at is None:
            token.revoked_at = timezone.now()
            token.save(update_fields=["revoked_at", "updated_at"])
            audit_record(
                action="token.revoked", subject=token, actor=user, before={"active": True}, after={"active": False}
            )
    return token


def user_create(*, username: str, password: str, email: str = "", is_superuser: bool = False, actor=None) -> User:
    with transaction.atomic():
        user = User.objects.create_user(
            username=username, password=password, email=email, is_staff=is_superuser, is_superuser=is_superuser
        )
        audit_record(
            action="user.created", subject=user, actor=actor, after={"username": username, "superuser": is_superuser}
        )
    return user


def team_create(*, name: str, description: str = "", actor=None) -> Team:
    with transaction.atomic():
        team = Team.objects.create(name=name, description=description)
        audit_record(action="team.created", subject=team, actor=actor, after={"name": name})
    return team


def membership_set(*, user: User, team: Team, role: str, actor=None) -> Membership:
    if role not in Membership.Role.values:
        raise ValidationFailed(f"Unknown role {role!r}; use one of {', '.join(Membership.Role.values)}.")
    with transaction.atomic():
        membership, created = Membership.objects.select_for_update().get_or_create(
            user=user, team=team, defaults={"role": role}
        )
        before = None if created else {"role": membership.role}
        if created or membership.role != role:
            membership.role = role
            membership.save(update_fields=["role", "updated_at"])
            audit_record(action="membership.set", subject=membership, actor=actor, before=before, after={"role": role})
    return membership

import hashlib
import secrets

from django.contrib.auth.models import Group
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


def token_revoke(*, user: User, token_uuid, actor=None) -> ApiToken:
    """Revoke one of ``user``'s tokens: by the user, or by an administrator (``actor``)."""
    with transaction.atomic():
        token = ApiToken.objects.select_for_update().filter(user=user, uuid=token_uuid).first()
        if token is None:
            raise NotFound("No such token.")
        if token.revoked_at is None:
            token.revoked_at = timezone.now()
            token.save(update_fields=["revoked_at", "updated_at"])
            audit_record(
                action="token.revoked",
                subject=token,
                actor=actor or user,
                before={"active": True},
                after={"active": False},
            )
    return token


def user_create(
    *, username: str, password: str | None, email: str = "", is_superuser: bool = False, actor=None
) -> User:
    """A new user; ``password`` None makes one who cannot log in with a password (SSO only)."""
    with transaction.atomic():
        user = User.objects.create_user(
            username=username, password=password, email=email, is_staff=is_superuser, is_superuser=is_superuser
        )
        audit_record(
            action="user.created",
            subject=user,
            actor=actor,
            after={"username": username, "superuser": is_superuser, "password_usable": user.has_usable_password()},
        )
    return user


USER_FIELDS = (
    "username",
    "first_name",
    "last_name",
    "email",
    "is_active",
    "is_staff",
    "is_superuser",
    "last_login",
    "date_joined",
)


def _user_snapshot(user: User) -> dict:
    return {
        **{f: getattr(user, f) for f in USER_FIELDS},
        "groups": sorted(user.groups.values_list("name", flat=True)),
        "permissions": sorted(
            f"{app}.{codename}"
            for app, codename in user.user_permissions.values_list("content_type__app_label", "codename")
        ),
    }


def _diff(before: dict, after: dict) -> tuple[dict, dict]:
    changed = [k for k in after if before.get(k) != after[k]]
    return {k: before.get(k) for k in changed}, {k: after[k] for k in changed}


def user_update(*, user: User, actor, groups=None, permissions=None, **fields) -> User:
    """Change who a user is and what they may do (names, e-mail, flags, groups, permissions):
    one audit event with what changed, none when nothing did."""
    unknown = set(fields) - set(USER_FIELDS)
    if unknown:
        raise ValidationFailed(f"Unknown user fields: {', '.join(sorted(unknown))}.")
    with transaction.atomic():
        user = User.objects.select_for_update().get(pk=user.pk)
        before = _user_snapshot(user)
        for name, value in fields.items():
            setattr(user, name, value)
        if fields:
            user.save(update_fields=list(fields))
        if groups is not None:
            user.groups.set(groups)
        if permissions is not None:
            user.user_permissions.set(permissions)
        old, new = _diff(before, _user_snapshot(user))
        if new:
            audit_record(action="user.updated", subject=user, actor=actor, before=old, after=new)
    return user


def user_set_password(*, user: User, password: str | None, actor) -> User:
    """Set (or, with None, disable) a user's password. By the user themself it is
    ``user.password_changed``; by an administrator ``user.password_set``. The password itself
    is never recorded."""
    with transaction.atomic():
        user = User.objects.select_for_update().get(pk=user.pk)
        if password is None:
            user.set_unusable_password()
        else:
            user.set_password(password)
        user.save(update_fields=["password"])
        by_self = actor is not None and actor.pk == user.pk
        audit_record(
            action="user.password_changed" if by_self else "user.password_set",
            subject=user,
            actor=actor,
            after={"password_usable": user.has_usable_password()},
        )
    return user


def team_create(*, name: str, description: str = "", actor=None) -> Team:
    with transaction.atomic():
        team = Team.objects.create(name=name, description=description)
        audit_record(action="team.created", subject=team, actor=actor, after={"name": name})
    return team


def team_update(*, team: Team, actor, name: str, description: str) -> Team:
    """Rename a team or change its description. Teams appear by name in forms and the API, so
    a rename is recorded with the old name."""
    with transaction.atomic():
        team = Team.objects.select_for_update().get(pk=team.pk)
        before = {"name": team.name, "description": team.description}
        team.name, team.description = name, description
        team.save(update_fields=["name", "description", "updated_at"])
        old, new = _diff(before, {"name": name, "description": description})
        if new:
            audit_record(action="team.updated", subject=team, actor=actor, before=old, after=new)
    return team


def membership_remove(*, membership: Membership, actor) -> None:
    with transaction.atomic():
        audit_record(action="membership.removed", subject=membership, actor=actor, before={"role": membership.role})
        membership.delete()


def _group_snapshot(group: Group) -> dict:
    perms = group.permissions.values_list("content_type__app_label", "codename")
    return {"name": group.name, "permissions": sorted(f"{app}.{codename}" for app, codename in perms)}


def group_save(*, group: Group, actor, name: str, permissions) -> Group:
    """Create or change a group of Django permissions (``group`` unsaved to create)."""
    created = group.pk is None
    with transaction.atomic():
        before = {} if created else _group_snapshot(Group.objects.select_for_update().get(pk=group.pk))
        group.name = name
        group.save()
        group.permissions.set(permissions)
        old, new = _diff(before, _group_snapshot(group))
        if created or new:
            audit_record(
                action="group.created" if created else "group.updated",
                subject=group,
                actor=actor,
                before=None if created else old,
                after=new,
            )
    return group


def group_delete(*, group: Group, actor) -> None:
    with transaction.atomic():
        audit_record(
            action="group.deleted",
            subject=group,
            actor=actor,
            before=_group_snapshot(group),
        )
        group.delete()


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


def lockouts_clear(*, attempts, actor) -> int:
    """Lift login lockouts early (django-axes' failure counts), one audit event per cleared
    username/address, so an administrator unlocking someone is on the record too."""
    cleared = 0
    with transaction.atomic():
        for attempt in list(attempts):
            audit_record(
                action="user.lockout_cleared",
                subject_type="accounts.user",
                subject_text=str(attempt.username or "")[:150],
                actor=actor,
                before={
                    "username": attempt.username,
                    "ip_address": attempt.ip_address,
                    "failures": attempt.failures_since_start,
                },
            )
            attempt.delete()
            cleared += 1
    return cleared

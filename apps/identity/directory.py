"""What a directory says about a person, applied to the hub: teams and roles from groups (at
each sign-in through OIDC or LDAP, and by the periodic LDAP sync), and suspension of the grants
of someone the directory no longer knows. Every change goes through the accounts and clusters
services, so each is audited like an administrator's."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from apps.accounts import services as account_services
from apps.accounts.models import Membership, Team, User
from apps.audit.services import audit_record
from apps.clusters import services as cluster_services
from apps.clusters.models import ClusterGrant

log = logging.getLogger(__name__)

ROLE_RANK = {Membership.Role.MEMBER: 1, Membership.Role.APPROVER: 2, Membership.Role.ADMIN: 3}


@dataclass(frozen=True)
class GroupRule:
    group: str
    team: str
    role: str


def group_rules() -> list[GroupRule]:
    """AXLE_SSO_GROUP_MAP as rules; a bad entry is a configuration error, said at once."""
    rules = []
    for group, target in (settings.AXLE_SSO_GROUP_MAP or {}).items():
        team, _, role = str(target).partition(":")
        role = role or Membership.Role.MEMBER
        if not team or role not in ROLE_RANK:
            raise ImproperlyConfigured(
                f"AXLE_SSO_GROUP_MAP[{group!r}] is {target!r}: write 'team:role' with role member, approver or admin."
            )
        rules.append(GroupRule(group=group.lower(), team=team, role=role))
    return rules


def roles_for(groups: Iterable[str]) -> dict[str, str]:
    """Each managed team's highest role among the person's groups (names, CNs or DNs)."""
    have = {g.lower() for g in groups if g}
    wanted: dict[str, str] = {}
    for rule in group_rules():
        if rule.group in have and ROLE_RANK[rule.role] > ROLE_RANK.get(wanted.get(rule.team, ""), 0):
            wanted[rule.team] = rule.role
    return wanted


def directory_apply(*, user: User, groups: Iterable[str], source: str) -> dict[str, tuple[str | None, str | None]]:
    """Make the user's roles in the teams the map names what their groups say; return the
    changes as {team: (role before, role after)}. Teams the map does not name are left alone."""
    groups = sorted(set(groups))
    managed = {r.team for r in group_rules()}
    wanted = roles_for(groups)
    changes: dict[str, tuple[str | None, str | None]] = {}
    with transaction.atomic():
        current = {
            m.team.name: m for m in Membership.objects.filter(user=user, team__name__in=managed).select_related("team")
        }
        for team_name in sorted(managed):
            have = current.get(team_name)
            want = wanted.get(team_name)
            if want and (have is None or have.role != want):
                team = Team.objects.filter(name=team_name).first() or account_services.team_create(
                    name=team_name, description=f"Made from the directory's groups ({source}).", actor=None
                )
                account_services.membership_set(user=user, team=team, role=want, actor=None)
                changes[team_name] = (have.role if have else None, want)
            elif have is not None and not want:
                account_services.membership_remove(membership=have, actor=None)
                changes[team_name] = (have.role, None)
        if changes:
            audit_record(
                action="user.directory_roles",
                subject=user,
                actor=None,
                before={"roles": {t: b for t, (b, _) in changes.items()}},
                after={"roles": {t: a for t, (_, a) in changes.items()}, "source": source, "groups": groups},
            )
    return changes


def directory_mark(*, user: User, source: str, uid: str) -> None:
    fields = {}
    if user.directory != source:
        fields["directory"] = source
    if uid and user.directory_uid != uid:
        fields["directory_uid"] = uid
    if fields:
        User.objects.filter(pk=user.pk).update(**fields)
        for name, value in fields.items():
            setattr(user, name, value)


def directory_user_gone(*, user: User, source: str, reason: str) -> list[ClusterGrant]:
    """The directory no longer knows `user` (removed or disabled): their directory roles go and
    their active grants are suspended, each audited. They cannot sign in through it anyway."""
    directory_apply(user=user, groups=[], source=source)
    suspended = []
    for grant in ClusterGrant.objects.filter(user=user, status=ClusterGrant.Status.ACTIVE).select_related("cluster"):
        suspended.append(cluster_services.grant_suspend(grant=grant, actor=None, reason=reason))
    return suspended

"""The periodic LDAP sync: people who never sign in again still lose what the directory took
from them. Each known LDAP account is looked up; one the directory no longer has (or that it
marks disabled by the user filter) loses its directory roles and has its grants suspended;
the others get their roles from their current groups. If the directory cannot be asked,
nothing changes: an outage is not a departure."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import ldap
from django.conf import settings
from ldap.filter import escape_filter_chars

from apps.accounts.models import User

from .directory import directory_apply, directory_user_gone
from .ldap import DirectoryLDAPBackend, groups_of, ldap_settings

log = logging.getLogger(__name__)


@dataclass
class SyncResult:
    checked: int = 0
    gone: list[str] = field(default_factory=list)
    changed: dict[str, dict] = field(default_factory=dict)


def _present(usernames: list[str]) -> set[str]:
    """Which of these the directory still finds with the sign-in filter (one search each, over
    one connection bound as the hub's reader). Raises ldap.LDAPError when it cannot be asked."""
    s = ldap_settings()
    conn = ldap.initialize(settings.AUTH_LDAP_SERVER_URI)
    for option, value in s.CONNECTION_OPTIONS.items():
        conn.set_option(option, value)
    try:
        if settings.AUTH_LDAP_START_TLS:
            conn.start_tls_s()
        conn.simple_bind_s(settings.AUTH_LDAP_BIND_DN, settings.AUTH_LDAP_BIND_PASSWORD)
        found = set()
        for name in usernames:
            query = settings.AXLE_LDAP_USER_FILTER % {"user": escape_filter_chars(name)}
            if conn.search_s(settings.AXLE_LDAP_USER_BASE, ldap.SCOPE_SUBTREE, query, ["uid"]):
                found.add(name)
        return found
    finally:
        conn.unbind_s()


def ldap_sync() -> SyncResult:
    result = SyncResult()
    users = list(User.objects.filter(directory=User.Directory.LDAP, is_active=True).order_by("username"))
    if not users or not settings.AUTH_LDAP_SERVER_URI:
        return result
    present = _present([u.username for u in users])  # raises on an outage: nothing changes
    backend = DirectoryLDAPBackend()
    for user in users:
        result.checked += 1
        if user.username not in present:
            directory_user_gone(user=user, source="ldap-sync", reason="no longer in the LDAP directory")
            result.gone.append(user.username)
            continue
        populated = backend.populate_user(user.username)
        if populated is None:
            log.warning("LDAP sync: %s is in the directory but could not be read; left as is", user.username)
            continue
        changes = directory_apply(user=populated, groups=groups_of(populated.ldap_user), source="ldap-sync")
        if changes:
            result.changed[user.username] = changes
    return result

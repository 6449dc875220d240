"""LDAP sign-in through django-auth-ldap: bind as the hub's reader, find the person by
AXLE_LDAP_USER_FILTER under AXLE_LDAP_USER_BASE, bind as them with their password, read their
groups, and apply the group map (apps.identity.directory). Their `uid` is kept as the default
cluster username for the grants an administrator creates (on HPC sites they are the same)."""

from __future__ import annotations

import ldap
from django.conf import settings
from django_auth_ldap.backend import LDAPBackend, LDAPSettings
from django_auth_ldap.config import GroupOfNamesType, LDAPSearch, PosixGroupType

from apps.accounts.models import User

from .directory import directory_apply, directory_mark


def ldap_settings() -> LDAPSettings:
    s = LDAPSettings("AUTH_LDAP_", {})
    s.USER_SEARCH = LDAPSearch(settings.AXLE_LDAP_USER_BASE, ldap.SCOPE_SUBTREE, settings.AXLE_LDAP_USER_FILTER)
    if settings.AXLE_LDAP_GROUP_TYPE == "posixGroup":
        s.GROUP_SEARCH = LDAPSearch(settings.AXLE_LDAP_GROUP_BASE, ldap.SCOPE_SUBTREE, "(objectClass=posixGroup)")
        s.GROUP_TYPE = PosixGroupType()
    else:
        s.GROUP_SEARCH = LDAPSearch(settings.AXLE_LDAP_GROUP_BASE, ldap.SCOPE_SUBTREE, "(objectClass=groupOfNames)")
        s.GROUP_TYPE = GroupOfNamesType()
    options = {ldap.OPT_NETWORK_TIMEOUT: 10, ldap.OPT_TIMEOUT: 10, ldap.OPT_REFERRALS: 0}
    if settings.AXLE_LDAP_CA_FILE:
        options[ldap.OPT_X_TLS_CACERTFILE] = settings.AXLE_LDAP_CA_FILE
        options[ldap.OPT_X_TLS_REQUIRE_CERT] = ldap.OPT_X_TLS_DEMAND
        options[ldap.OPT_X_TLS_NEWCTX] = 0
    s.CONNECTION_OPTIONS = options
    return s


def groups_of(ldap_user) -> set[str]:
    """A person's groups as both names (cn) and DNs, so the map may use either."""
    return set(ldap_user.group_names) | set(ldap_user.group_dns)


class DirectoryLDAPBackend(LDAPBackend):
    @property
    def settings(self):
        if self._settings is None:
            self._settings = ldap_settings()
        return self._settings

    @settings.setter
    def settings(self, value):
        self._settings = value

    def authenticate_ldap_user(self, ldap_user, password):
        user = super().authenticate_ldap_user(ldap_user, password)
        if user is None:
            return None
        uid = (ldap_user.attrs.get("uid") or [user.get_username()])[0]
        directory_mark(user=user, source=User.Directory.LDAP, uid=uid)
        directory_apply(user=user, groups=groups_of(ldap_user), source="ldap")
        return user

"""django-q2 entry points of the identity app."""

from .sync import ldap_sync


def identity_ldap_sync() -> str:
    result = ldap_sync()
    return f"{result.checked} checked, {len(result.gone)} gone, {len(result.changed)} with new roles"

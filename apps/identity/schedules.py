"""Periodic work of the identity app, registered by `manage.py setup_schedules`: the LDAP sync
runs hourly; it does nothing while no LDAP directory is configured."""

SCHEDULES = [
    ("identity.ldap_sync", "apps.identity.tasks.identity_ldap_sync", 3600),
]

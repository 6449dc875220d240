"""`migrate` as the database owner: with DATABASE_MIGRATE_URL set, migrations run with its
credentials (the owner of every table) and the hub's own role (DATABASE_URL's user) is then
granted what it needs and no more (apps/audit/roles.py), so it never owns the audit tables."""

from django.core.management.base import CommandError
from django.core.management.commands.migrate import Command as MigrateCommand
from django.db import connections

from apps.audit.roles import RoleError, as_owner, grant_app_role


class Command(MigrateCommand):
    def handle(self, *args, **options):
        alias = options["database"]
        app_role = connections[alias].settings_dict.get("USER", "")
        with as_owner(alias) as owner:
            super().handle(*args, **options)
            connection = connections[alias]
            if owner and connection.vendor == "postgresql" and app_role != connection.settings_dict["USER"]:
                try:
                    grant_app_role(connection, app_role)
                except RoleError as exc:
                    raise CommandError(str(exc)) from exc
                if options["verbosity"]:
                    self.stdout.write(
                        f"Granted the hub's role {app_role!r} DML, and SELECT/INSERT only on the audit trail."
                    )

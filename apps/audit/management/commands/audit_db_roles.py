from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from apps.audit.roles import RoleError, as_owner, grant_app_role


class Command(BaseCommand):
    help = (
        "PostgreSQL only: give the hub's database role (the user of DATABASE_URL, or --role) ordinary DML on "
        "every table but only SELECT/INSERT on the audit trail. Runs as the owner (DATABASE_MIGRATE_URL); "
        "`migrate` runs it too when DATABASE_MIGRATE_URL is set."
    )

    def add_arguments(self, parser):
        parser.add_argument("--role", default="", help="the hub's role (default: DATABASE_URL's user)")
        parser.add_argument("--create", action="store_true", help="create the role (LOGIN) if it does not exist")
        parser.add_argument("--password-file", default="", help="with --create: a file holding its password")
        parser.add_argument("--database", default="default")

    def handle(self, *args, **options):
        alias = options["database"]
        role = options["role"] or connections[alias].settings_dict["USER"]
        if connections[alias].vendor != "postgresql":
            raise CommandError("audit_db_roles is for PostgreSQL; SQLite has no roles.")
        password = None
        if options["password_file"]:
            with open(options["password_file"]) as fh:
                password = fh.read().strip()
        with as_owner(alias):
            try:
                grant_app_role(connections[alias], role, create=options["create"], password=password)
            except RoleError as exc:
                raise CommandError(str(exc)) from exc
        self.stdout.write(f"PostgreSQL role {role!r}: DML on the hub's tables, SELECT/INSERT only on the audit trail.")

"""Deploy check: on PostgreSQL the hub must not connect as a role that could lift the audit
trail's guards (a superuser, or the owner of the audit tables); see apps.audit.roles."""

from django.core import checks
from django.db import DatabaseError, connections


def _role_problem(connection) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user")
        role, superuser = cursor.fetchone()
        if superuser:
            return f"connects to PostgreSQL as {role!r}, a superuser"
        cursor.execute(
            "SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'audit_auditevent' "
            "AND tableowner = current_user"
        )
        if cursor.fetchone():
            return f"connects to PostgreSQL as {role!r}, which owns audit_auditevent"
    return ""


# Tagged security, not database: Django runs database-tagged checks only with --database.
@checks.register(checks.Tags.security, deploy=True)
def check_the_hub_does_not_own_the_audit_trail(app_configs=None, databases=None, **kwargs):
    connection = connections["default"]
    if connection.vendor != "postgresql":
        return []
    try:
        problem = _role_problem(connection)
    except DatabaseError as exc:
        return [checks.Warning(f"Could not check the hub's PostgreSQL role: {exc}", id="audit.W001")]
    if not problem:
        return []
    return [
        checks.Error(
            f"The hub {problem}: it could disable the audit trail's triggers and rewrite history.",
            hint=(
                "Set DATABASE_URL to an ordinary role and DATABASE_MIGRATE_URL to the tables' owner; "
                "`manage.py migrate` then grants the hub's role what it needs (README, Audit trail)."
            ),
            id="audit.E001",
        )
    ]

"""PostgreSQL roles: the hub connects as a role that does not own the audit tables.

Migrations run as the owner (DATABASE_MIGRATE_URL); the hub runs as the app role
(DATABASE_URL), which gets ordinary DML on every table but only SELECT and INSERT on the audit
trail and SELECT/INSERT/UPDATE on its head row (whose trigger lets it only move forward). Not
being the owner, it cannot ALTER TABLE … DISABLE TRIGGER, DROP TRIGGER or TRUNCATE either."""

from contextlib import contextmanager

import environ
from django.conf import settings
from django.db import connections
from psycopg import sql

APPEND_ONLY = {
    "audit_auditevent": ["SELECT", "INSERT"],
    "audit_auditchainhead": ["SELECT", "INSERT", "UPDATE"],
}


class RoleError(Exception):
    pass


def grant_app_role(connection, role: str, *, create: bool = False, password: str | None = None) -> None:
    """Give ``role`` what the hub needs and no more; with ``create``, make it first (LOGIN)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", [role])
        row = cursor.fetchone()
        if row is None:
            if not create:
                raise RoleError(f"PostgreSQL role {role!r} does not exist: create it, or pass --create.")
            stmt = sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(sql.Identifier(role))
            if password:
                stmt = sql.SQL("{} PASSWORD {}").format(stmt, sql.Literal(password))
            cursor.execute(stmt.as_string(cursor.connection))
        elif row[0]:
            raise RoleError(f"PostgreSQL role {role!r} is a superuser: the hub must connect as an ordinary role.")
        cursor.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tableowner = %s", [role]
        )
        owned = [r[0] for r in cursor.fetchall()]
        if owned:
            raise RoleError(
                f"PostgreSQL role {role!r} owns {', '.join(sorted(owned)[:5])}: run migrations as another role "
                "(DATABASE_MIGRATE_URL) so the hub's role cannot disable the audit triggers."
            )
        ident = sql.Identifier(role)
        statements = [
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(connection.settings_dict["NAME"]), ident
            ),
            sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(ident),
            sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}").format(ident),
            sql.SQL("GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {}").format(ident),
        ]
        for table, allowed in APPEND_ONLY.items():
            statements.append(
                sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(sql.Identifier(table), ident),
            )
            statements.append(
                sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                    sql.SQL(", ").join(sql.SQL(p) for p in allowed), sql.Identifier(table), ident
                )
            )
        for stmt in statements:
            cursor.execute(stmt.as_string(cursor.connection))


def _credentials(url: str) -> dict:
    config = environ.Env.db_url_config(url)
    return {"USER": config.get("USER", ""), "PASSWORD": config.get("PASSWORD", "")}


def app_role_name(alias: str = "default") -> str:
    return connections[alias].settings_dict["USER"]


@contextmanager
def as_owner(alias: str = "default"):
    """Run the block connected with DATABASE_MIGRATE_URL's credentials (same database),
    when it is set; otherwise as usual."""
    url = getattr(settings, "DATABASE_MIGRATE_URL", "")
    if not url:
        yield False
        return
    conn = connections[alias]
    saved = {k: conn.settings_dict.get(k) for k in ("USER", "PASSWORD")}
    conn.close()
    conn.settings_dict.update(_credentials(url))
    try:
        yield True
    finally:
        conn.close()
        conn.settings_dict.update(saved)

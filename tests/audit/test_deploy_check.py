"""`manage.py check --deploy` refuses a hub that connects to PostgreSQL as a role that could
lift the audit trail's guards."""

import pytest
from django.core import checks
from django.db import connection

from apps.audit.roles import grant_app_role

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def _audit_errors():
    found = checks.run_checks(include_deployment_checks=True, tags=[checks.Tags.security])
    return [m for m in found if m.id == "audit.E001"]


def test_it_errors_when_the_hub_connects_as_a_superuser():
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        assert cursor.fetchone()[0], "the test database connects as postgres"
    (error,) = _audit_errors()
    assert "a superuser" in error.msg and "DATABASE_MIGRATE_URL" in error.hint


def test_it_errors_when_the_hub_owns_the_audit_table():
    role = f"axle_owner_{connection.settings_dict['NAME']}"[:63]
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE ROLE "{role}" NOSUPERUSER')
        cursor.execute(f'ALTER TABLE audit_auditevent OWNER TO "{role}"')
        cursor.execute(f'SET LOCAL ROLE "{role}"')
    (error,) = _audit_errors()
    assert "owns audit_auditevent" in error.msg


def test_it_passes_as_the_hubs_app_role():
    role = f"axle_app_{connection.settings_dict['NAME']}"[:63]
    grant_app_role(connection, role, create=True)
    with connection.cursor() as cursor:
        cursor.execute(f'SET LOCAL ROLE "{role}"')
    assert _audit_errors() == []

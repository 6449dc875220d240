"""Shared fixtures. Personas: alice owns things, bob is her teammate, charlie has no access,
and root is a platform administrator."""

import os

import pytest

from tests.factories import PASSWORD, MembershipFactory, TeamFactory, UserFactory

# Playwright's sync API runs an event loop in the test thread; Django's ORM refuses to run
# in a thread with a running loop unless told this is deliberate.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def password():
    return PASSWORD


@pytest.fixture
def team(db):
    return TeamFactory(name="vision")


@pytest.fixture
def alice(team):
    return MembershipFactory(user=UserFactory(username="alice"), team=team).user


@pytest.fixture
def bob(team):
    return MembershipFactory(user=UserFactory(username="bob"), team=team).user


@pytest.fixture
def charlie(db):
    return UserFactory(username="charlie")


@pytest.fixture
def root(db):
    return UserFactory(username="root", is_staff=True, is_superuser=True)


@pytest.fixture
def api(db):
    from rest_framework.test import APIClient

    return APIClient()


def pytest_collection_modifyitems(config, items):
    from django.conf import settings

    on_postgres = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
    if on_postgres:
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL: set DATABASE_URL=postgres://… (./dev test does when it can)")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


def _set_truncate_guard(enabled: bool) -> None:
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    verb = "ENABLE" if enabled else "DISABLE"
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE audit_auditevent {verb} TRIGGER audit_auditevent_no_truncate")


@pytest.fixture
def _audit_guard_restored(django_db_blocker):
    yield
    with django_db_blocker.unblock():
        _set_truncate_guard(True)


@pytest.fixture
def transactional_audit_db(_audit_guard_restored, transactional_db):
    """A transactional database whose audit table can be emptied afterwards.

    Django empties the tables between transactional tests with TRUNCATE, which the
    append-only trigger rightly refuses; the guard is lifted for that flush only (teardown
    order: this fixture, then the flush, then ``_audit_guard_restored``)."""
    yield
    _set_truncate_guard(False)

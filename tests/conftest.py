"""Shared fixtures. Personas: alice owns things, bob is her teammate, charlie has no access,
and root is a platform administrator."""

import os

import pytest

from tests.factories import PASSWORD, MembershipFactory, TeamFactory, UserFactory


def _log_in_to_mlflow() -> None:
    """The stack's MLflow asks for a login. The tests, and the mlflow commands and scripts they
    start, use the hub's, read from the file compose/local/stack.sh wrote (cluster.env names
    it); the hub's own code gets it from settings."""
    user, path = os.environ.get("AXLE_MLFLOW_USERNAME"), os.environ.get("AXLE_MLFLOW_PASSWORD_FILE")
    if user and path and os.access(path, os.R_OK):
        os.environ.setdefault("MLFLOW_TRACKING_USERNAME", user)
        with open(path) as fh:
            os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", fh.read().strip())


_log_in_to_mlflow()

pytest_plugins = ["tests.ci_skips", "pytester"]

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


@pytest.fixture(autouse=True)
def _fresh_cluster_connections():
    """Each test starts without cached cluster connections from an earlier one."""
    yield
    from apps.clusters import transport

    transport.close_all()


@pytest.fixture(autouse=True)
def _mlflow_not_found_down():
    """The live poll's MLflow breaker (apps.jobs.tracking) starts closed in each test."""
    from apps.jobs import tracking

    tracking.reset_live_breaker()
    yield
    tracking.reset_live_breaker()
    tracking._reusable.clear()  # shared MLflow logins a test's batches made: not handed to the next test


@pytest.fixture(autouse=True)
def _own_audit_checkpoint_file(settings, tmp_path):
    """Each test's database starts with an empty audit chain, so it gets its own empty file of
    signed checkpoints too (a shared file would hold checkpoints of other tests' chains)."""
    settings.AXLE_AUDIT_CHECKPOINT_FILE = tmp_path / "audit-checkpoints.log"


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


def _allow_test_flush_of_the_audit_table():
    """Django empties tables between transactional tests with TRUNCATE, which the audit
    table's append-only trigger rightly refuses. For the test database only, lift the guard
    inside the flush's own transaction and put it back before that transaction commits."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    original = DatabaseOperations.sql_flush

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        sql = original(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        guards = [
            ("audit_auditevent", "audit_auditevent_no_truncate"),
            ("audit_auditchainhead", "audit_auditchainhead_no_truncate"),
        ]
        for table, trigger in guards:
            if table in tables:
                guard = f"ALTER TABLE {table} {{}} TRIGGER {trigger};"
                sql = [guard.format("DISABLE"), *sql, guard.format("ENABLE")]
        return sql

    DatabaseOperations.sql_flush = sql_flush


_allow_test_flush_of_the_audit_table()


def pytest_sessionstart(session):
    """In CI the local cluster must be up: `./dev test` starts it, so its absence is a
    failure of that step, and silently skipping every cluster test would hide it."""
    if os.environ.get("CI") != "true":
        return
    from tests.local_cluster import CLUSTER_ENV

    if not CLUSTER_ENV.exists():
        pytest.exit(f"{CLUSTER_ENV} is missing in CI: compose/local/stack.sh up did not finish", returncode=1)

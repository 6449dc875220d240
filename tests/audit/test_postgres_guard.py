"""On PostgreSQL the database itself refuses to change history, and the hub's own role (which
does not own the audit tables) cannot lift that refusal. Tampering it cannot even attempt is
refused; what it can attempt is detected by audit_verify."""

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from apps.audit.models import AuditChainHead, AuditEvent
from apps.audit.roles import RoleError, grant_app_role
from apps.audit.selectors import audit_verify
from apps.audit.services import audit_record

from .tamper import insert_event, set_head

pytestmark = pytest.mark.postgres


def _refused(sql, params=(), match=""):
    with pytest.raises(DatabaseError, match=match):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params)


@pytest.fixture
def as_app_role(db):
    """Switch this test's connection to the hub's role as `migrate` would grant it. The role
    and grants are made inside the test's transaction and vanish with it."""
    role = f"axle_app_{connection.settings_dict['NAME']}"[:63]
    grant_app_role(connection, role, create=True)
    with connection.cursor() as cursor:
        cursor.execute(f'SET LOCAL ROLE "{role}"')
    return role


@pytest.mark.django_db
@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_auditevent SET action = 'x.y'",
        "DELETE FROM audit_auditevent",
        "TRUNCATE audit_auditevent",
    ],
)
def test_the_database_refuses_to_change_history_even_for_its_owner(sql):
    audit_record(action="thing.created")
    _refused(sql, match="append-only")
    assert AuditEvent.objects.filter(action="thing.created").count() == 1


@pytest.mark.django_db
def test_the_orm_cannot_delete_an_event_either():
    event = audit_record(action="thing.created")
    with pytest.raises(DatabaseError):
        with transaction.atomic():
            AuditEvent.objects.filter(pk=event.pk).delete()


@pytest.mark.django_db
class TestTheHeadRow:
    def test_it_refuses_to_move_back(self):
        events = [audit_record(action="thing.created") for _ in range(3)]
        _refused("UPDATE audit_auditchainhead SET seq = 1, hash = %s", [events[0].hash], match="only moves forward")

    def test_it_refuses_to_point_anywhere_but_the_last_event(self):
        events = [audit_record(action="thing.created") for _ in range(2)]
        _refused("UPDATE audit_auditchainhead SET seq = 5, hash = %s", ["f" * 64], match="last event")
        assert AuditChainHead.objects.get(pk=1).hash == events[-1].hash

    @pytest.mark.parametrize("sql", ["DELETE FROM audit_auditchainhead", "TRUNCATE audit_auditchainhead"])
    def test_it_cannot_be_removed(self, sql):
        audit_record(action="thing.created")
        _refused(sql, match="refused")


@pytest.mark.django_db
class TestAsTheHubsRole:
    """Issue 8, finding 5: the tamperings the table owner could do, tried as the hub's role."""

    def test_the_hub_works_as_its_role(self, as_app_role, alice):
        audit_record(action="thing.created", actor=alice)
        alice.first_name = "Alice"
        alice.save()
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user")
            assert cursor.fetchone()[0] == as_app_role
        assert audit_verify().ok

    @pytest.mark.parametrize(
        "sql",
        [
            "UPDATE audit_auditevent SET action = 'x.y'",
            "DELETE FROM audit_auditevent",
            "TRUNCATE audit_auditevent",
            "ALTER TABLE audit_auditevent DISABLE TRIGGER USER",
            "ALTER TABLE audit_auditevent DISABLE TRIGGER ALL",
            "DROP TRIGGER audit_auditevent_no_update_delete ON audit_auditevent",
            "DROP TABLE audit_auditevent",
            "ALTER TABLE audit_auditchainhead DISABLE TRIGGER USER",
            "DROP TRIGGER audit_auditchainhead_guard ON audit_auditchainhead",
            "DELETE FROM audit_auditchainhead",
            "TRUNCATE audit_auditchainhead",
            "UPDATE audit_auditchainhead SET legacy_boundary = ''",
            "DROP TRIGGER audit_auditchainhead_boundary_guard ON audit_auditchainhead",
            "SET session_replication_role = replica",
        ],
    )
    def test_it_cannot_change_or_unguard_history(self, as_app_role, sql):
        audit_record(action="thing.created")
        _refused(sql, match="permission denied|must be owner|refused")
        assert audit_verify().ok

    def test_what_it_can_try_is_detected(self, as_app_role):
        # INSERT is all it has: a forged event with a correct plain hash, and the head moved
        # onto it (which the head's guard allows, as it is the last event) is caught by the key.
        events = [audit_record(action="thing.created") for _ in range(2)]
        forged = insert_event(seq=3, prev_hash=events[-1].hash, created_at=events[-1].created_at, action="x.forged")
        set_head(3, forged)
        result = audit_verify()
        assert not result.ok and result.bad_seq == 3


@pytest.mark.django_db
class TestAsTheOwner:
    """The owner (or a superuser) can lift the triggers; the key and checkpoints still catch it."""

    @pytest.mark.parametrize(
        "unguard",
        [
            "ALTER TABLE audit_auditevent DISABLE TRIGGER USER",
            "DROP TRIGGER audit_auditevent_no_update_delete ON audit_auditevent",
        ],
    )
    def test_an_edit_after_lifting_the_trigger_is_detected(self, unguard):
        for _ in range(3):
            audit_record(action="thing.created")
        with connection.cursor() as cursor:
            cursor.execute(unguard)
            cursor.execute("UPDATE audit_auditevent SET action = 'thing.innocent' WHERE seq = 2")
        result = audit_verify()
        assert not result.ok and result.bad_seq == 2

    def test_a_cut_tail_after_lifting_the_triggers_is_detected_by_the_checkpoint(self):
        events = [audit_record(action="thing.created") for _ in range(4)]
        call_command("audit_verify", stdout=open("/dev/null", "w"))
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER USER")
            cursor.execute("ALTER TABLE audit_auditchainhead DISABLE TRIGGER USER")
            cursor.execute("DELETE FROM audit_auditevent WHERE seq > 2")
            cursor.execute("UPDATE audit_auditchainhead SET seq = 2, hash = %s", [events[1].hash])
        result = audit_verify()
        assert not result.ok and "checkpoint recorded #4" in result.problem


@pytest.mark.django_db
def test_it_refuses_a_superuser_or_owner_as_the_hubs_role():
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        me = cursor.fetchone()[0]
    with pytest.raises(RoleError, match="superuser|owns"):
        grant_app_role(connection, me)


@pytest.mark.django_db
def test_audit_db_roles_creates_the_hubs_role_with_append_only_rights_on_the_trail():
    role = f"axle_cmd_{connection.settings_dict['NAME']}"[:63]
    call_command("audit_db_roles", "--role", role, "--create", stdout=open("/dev/null", "w"))

    def allowed(table, privilege):
        with connection.cursor() as cursor:
            cursor.execute("SELECT has_table_privilege(%s, %s, %s)", [role, table, privilege])
            return cursor.fetchone()[0]

    rights = {
        table: [p for p in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "TRIGGER") if allowed(table, p)]
        for table in ("audit_auditevent", "audit_auditchainhead", "accounts_user")
    }
    assert rights["audit_auditevent"] == ["SELECT", "INSERT"]
    assert rights["audit_auditchainhead"] == ["SELECT", "INSERT", "UPDATE"]
    assert rights["accounts_user"] == ["SELECT", "INSERT", "UPDATE", "DELETE"]

import json

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from apps.audit.models import AuditChainHead, AuditEvent
from apps.audit.selectors import audit_verify
from apps.audit.services import audit_record
from apps.core import context


def _record_some(n=5, actor=None):
    return [
        audit_record(action="thing.changed", actor=actor, subject_text=f"thing {i}", after={"i": i}) for i in range(n)
    ]


def _raw(sql, params=()):
    """Change the table behind the application's back (as a DBA or an attacker would)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Superuser-only switch that skips ordinary triggers, i.e. our append-only guard.
            cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(sql, params)


@pytest.mark.django_db
class TestChain:
    def test_it_links_each_event_to_the_one_before(self, alice):
        events = _record_some(3, actor=alice)
        assert events[0].prev_hash == "0" * 64
        assert events[1].prev_hash == events[0].hash
        assert events[2].prev_hash == events[1].hash
        assert [e.seq for e in events] == [1, 2, 3]
        assert events[0].actor_username == "alice"

    def test_it_verifies_an_untouched_chain(self, alice, capsys):
        last = _record_some(4, actor=alice)[-1]
        result = audit_verify()
        assert result.ok and result.count == 4
        call_command("audit_verify")
        out = capsys.readouterr().out
        assert "Audit chain OK" in out and last.hash in out

    def test_it_takes_request_id_and_actor_from_the_context(self, alice):
        with context.bind(request_id="req-123456789", actor_id=alice.pk):
            event = audit_record(action="thing.done")
        assert event.request_id == "req-123456789"
        assert event.actor_username == "alice"

    def test_it_stores_datetimes_exactly_as_hashed(self, alice):
        from django.utils import timezone

        audit_record(action="thing.dated", after={"when": timezone.now(), "nested": {"b": 1, "a": [1.5, None]}})
        assert audit_verify().ok

    def test_it_detects_an_edited_row(self, alice):
        _record_some(5)
        _raw("UPDATE audit_auditevent SET after = %s WHERE seq = 3", [json.dumps({"i": 99})])
        result = audit_verify()
        assert not result.ok and result.bad_seq == 3
        assert "modified" in result.problem
        with pytest.raises(CommandError, match="#3"):
            call_command("audit_verify")

    def test_it_detects_an_edited_actor(self, alice, bob):
        _record_some(3, actor=alice)
        _raw("UPDATE audit_auditevent SET actor_username = 'bob' WHERE seq = 2")
        assert audit_verify().bad_seq == 2

    def test_it_detects_a_deleted_row(self):
        _record_some(5)
        _raw("DELETE FROM audit_auditevent WHERE seq = 2")
        result = audit_verify()
        assert not result.ok and result.bad_seq == 3
        assert "missing" in result.problem

    def test_it_detects_a_deleted_tail(self):
        _record_some(5)
        _raw("DELETE FROM audit_auditevent WHERE seq = 5")
        result = audit_verify()
        assert not result.ok and "end" in result.problem

    def test_it_detects_an_inserted_row(self):
        events = _record_some(4)
        # A forged event slipped in as #3, everything after renumbered: the hash of the
        # forgery can be made consistent, but the old #3 no longer links to it.
        _raw("UPDATE audit_auditevent SET seq = seq + 100 WHERE seq >= 3")
        _raw("UPDATE audit_auditevent SET seq = seq - 99 WHERE seq >= 100")
        forged = AuditEvent(
            seq=3,
            created_at=events[2].created_at,
            action="thing.forged",
            prev_hash=events[1].hash,
            subject_text="",
            before=None,
            after=None,
        )
        from apps.audit.chain import event_hash

        forged.hash = event_hash(forged, events[1].hash)
        _raw(
            "INSERT INTO audit_auditevent (seq, uuid, created_at, actor_username, action, subject_type, subject_id,"
            " subject_text, request_id, before, after, prev_hash, hash)"
            " VALUES (%s,%s,%s,'',%s,'','','','',NULL,NULL,%s,%s)",
            [3, forged.uuid.hex, forged.created_at, forged.action, forged.prev_hash, forged.hash],
        )
        _raw("UPDATE audit_auditchainhead SET seq = 5")
        result = audit_verify()
        assert not result.ok and result.bad_seq == 4
        assert "does not link" in result.problem

    def test_it_detects_reordered_rows(self):
        _record_some(4)
        _raw("UPDATE audit_auditevent SET seq = 100 WHERE seq = 2")
        _raw("UPDATE audit_auditevent SET seq = 2 WHERE seq = 3")
        _raw("UPDATE audit_auditevent SET seq = 3 WHERE seq = 100")
        result = audit_verify()
        assert not result.ok and result.bad_seq == 2

    def test_the_head_tracks_the_last_event(self):
        last = _record_some(2)[-1]
        head = AuditChainHead.objects.get(pk=1)
        assert (head.seq, head.hash) == (last.seq, last.hash)

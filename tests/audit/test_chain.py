import json

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from apps.audit import keys as audit_keys
from apps.audit.chain import GENESIS, event_hash
from apps.audit.checkpoints import checkpoint_list
from apps.audit.models import AuditChainHead, AuditEvent
from apps.audit.selectors import audit_verify
from apps.audit.services import audit_legacy_boundary_record, audit_record, audit_record_many
from apps.audit.tasks import audit_checkpoint
from apps.core import context

from .tamper import insert_event, raw, set_head


def _record_some(n=5, actor=None):
    return [
        audit_record(action="thing.changed", actor=actor, subject_text=f"thing {i}", after={"i": i}) for i in range(n)
    ]


def _checkpoint():
    call_command("audit_verify", stdout=open("/dev/null", "w"))


@pytest.mark.django_db
class TestChain:
    def test_it_links_each_event_to_the_one_before(self, alice):
        events = _record_some(3, actor=alice)
        assert events[0].prev_hash == GENESIS
        assert events[1].prev_hash == events[0].hash
        assert events[2].prev_hash == events[1].hash
        assert [e.seq for e in events] == [1, 2, 3]
        assert events[0].actor_username == "alice"

    def test_an_event_of_a_rolled_back_savepoint_is_gone_and_a_many_append_keeps_its_place(self, alice):
        # What the chain owes any caller inside one transaction (a sweep's create and launch):
        # a change rolled back takes its event with it; events land in the order they were made.
        from django.db import transaction

        with transaction.atomic():
            audit_record(action="thing.first", actor=alice)
            try:
                with transaction.atomic():
                    audit_record(action="thing.rolled_back", actor=alice)
                    raise RuntimeError("the savepoint is rolled back")
            except RuntimeError:
                pass
            audit_record_many([{"action": "thing.second", "actor": alice}])
            audit_record(action="thing.third", actor=alice)
        assert list(AuditEvent.objects.order_by("seq").values_list("action", flat=True)) == [
            "thing.first",
            "thing.second",
            "thing.third",
        ]
        assert audit_verify().ok

    def test_a_many_append_copies_the_events_as_they_were_hashed(self, alice):
        # One COPY of the rows (not an INSERT with a model per row): what is stored must be
        # what was signed, JSON, times and the actor included, and the chain must verify.
        from django.db import connection, transaction
        from django.test.utils import CaptureQueriesContext

        entries = [
            {"action": "thing.copied", "actor": alice, "subject_text": "tab\there", "after": {"i": i, "x": 1.5}}
            for i in range(3)
        ]
        with transaction.atomic(), CaptureQueriesContext(connection) as queries:
            events = audit_record_many(entries)
        statements = [q["sql"].split()[0] for q in queries.captured_queries]
        assert statements.count("COPY" if connection.vendor == "postgresql" else "INSERT") == 1
        stored = list(AuditEvent.objects.order_by("seq"))
        assert [(e.seq, e.hash, e.after, e.subject_text, e.actor_id) for e in stored] == [
            (e.seq, e.hash, e.after, e.subject_text, alice.pk) for e in events
        ]
        assert [e.created_at for e in stored] == [e.created_at for e in events]
        assert audit_verify().ok

    def test_it_keys_each_link_with_the_audit_key(self):
        event = _record_some(1)[0]
        key_id, key = audit_keys.current()
        assert (event.version, event.key_id) == (2, key_id)
        assert event.hash == event_hash(event, GENESIS, {key_id: key})
        assert event.hash != event_hash(event, GENESIS, {key_id: b"another-key-" + b"x" * 32})

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

    def test_the_head_tracks_the_last_event(self):
        last = _record_some(2)[-1]
        head = AuditChainHead.objects.get(pk=1)
        assert (head.seq, head.hash) == (last.seq, last.hash)

    def test_old_unkeyed_events_still_verify_and_are_sealed_by_the_first_keyed_one(self):
        # A trail from before the chain was keyed: version-1 events with a plain sha256 link.
        from django.utils import timezone

        prev = GENESIS
        for seq in (1, 2):
            prev = insert_event(seq=seq, prev_hash=prev, created_at=timezone.now(), action="old.thing")
        set_head(2, prev)
        audit_legacy_boundary_record()  # what migration 0003 does for a trail that has events
        assert audit_verify().ok
        audit_record(action="new.thing")
        result = audit_verify()
        assert result.ok and result.count == 3

    def test_unkeyed_events_no_signed_boundary_covers_are_refused(self):
        from django.utils import timezone

        prev = insert_event(seq=1, prev_hash=GENESIS, created_at=timezone.now(), action="old.thing")
        set_head(1, prev)
        result = audit_verify()
        assert not result.ok and result.bad_seq == 1 and "without the audit key" in result.problem

    def test_the_first_keyed_event_signs_the_legacy_boundary_in_the_head_row_and_the_file(self, settings):
        _record_some(2)
        (line,) = settings.AXLE_AUDIT_CHECKPOINT_FILE.read_text().splitlines()
        boundary = json.loads(line)
        assert boundary["legacy"] is True and (boundary["seq"], boundary["hash"]) == (0, GENESIS)
        assert AuditChainHead.objects.get(pk=1).legacy_boundary == line
        assert checkpoint_list() == []  # the boundary is not an ordinary checkpoint


@pytest.mark.django_db
class TestCheckpoints:
    def test_audit_verify_signs_a_checkpoint_outside_the_database(self, settings):
        events = _record_some(3)
        _checkpoint()
        (cp,) = checkpoint_list()
        assert (cp.seq, cp.hash) == (3, events[-1].hash)
        line = json.loads(settings.AXLE_AUDIT_CHECKPOINT_FILE.read_text().splitlines()[-1])
        assert line["mac"] and line["key_id"] == audit_keys.current()[0]
        assert settings.AXLE_AUDIT_CHECKPOINT_FILE.stat().st_mode & 0o077 == 0
        _checkpoint()
        assert len(checkpoint_list()) == 1  # nothing new to sign

    def test_the_periodic_task_checks_what_is_new_and_signs_the_end(self):
        _record_some(2)
        assert audit_checkpoint() == "checkpoint #2"
        _record_some(2)
        assert audit_checkpoint() == "checkpoint #4"
        assert [cp.seq for cp in checkpoint_list()] == [2, 4]

    def test_the_periodic_task_signs_nothing_after_tampering(self):
        _record_some(3)
        audit_checkpoint()
        _record_some(2)
        raw("UPDATE audit_auditevent SET action = 'x.y' WHERE seq = 4")
        assert audit_checkpoint() == "broken"
        assert [cp.seq for cp in checkpoint_list()] == [3]

    def test_it_detects_an_edited_checkpoint_file(self, settings):
        _record_some(2)
        _checkpoint()
        path = settings.AXLE_AUDIT_CHECKPOINT_FILE
        path.write_text(path.read_text().replace('"seq": 2', '"seq": 1'))
        result = audit_verify()
        assert not result.ok and "line 2 of the checkpoint file" in result.problem

    def test_it_verifies_events_signed_with_an_older_key_after_rotation(self, settings):
        old = settings.AXLE_AUDIT_KEY
        _record_some(2)
        _checkpoint()
        with override_settings(AXLE_AUDIT_KEY="a-new-audit-key-" + "n" * 32 + "," + old):
            audit_keys.reset_cache()
            try:
                newer = _record_some(1)[0]
                assert newer.key_id != AuditEvent.objects.get(seq=1).key_id
                assert audit_verify().ok
            finally:
                audit_keys.reset_cache()
        # Dropping the new key leaves its event unverifiable: that is reported, not ignored.
        result = audit_verify()
        assert not result.ok and result.bad_seq == 3 and "not configured" in result.problem


@pytest.mark.django_db
class TestLosingTheCheckpointFile:
    """The checkpoint file is the proof outside the database; losing it is reported, never
    taken as "nothing to check"."""

    def test_a_deleted_checkpoint_file_fails_verification(self, settings):
        _record_some(3)
        _checkpoint()
        settings.AXLE_AUDIT_CHECKPOINT_FILE.unlink()
        result = audit_verify()
        assert not result.ok and "checkpoint file missing: cannot prove the tail" in result.problem
        with pytest.raises(CommandError, match="checkpoint file missing"):
            _checkpoint()

    def test_an_emptied_checkpoint_file_fails_verification(self, settings):
        _record_some(3)
        _checkpoint()
        settings.AXLE_AUDIT_CHECKPOINT_FILE.write_text("")
        result = audit_verify()
        assert not result.ok and "checkpoint file missing: cannot prove the tail" in result.problem
        assert audit_checkpoint() == "broken"

    def test_a_cut_tail_with_the_file_deleted_is_detected(self, settings):
        events = _record_some(4)
        _checkpoint()
        settings.AXLE_AUDIT_CHECKPOINT_FILE.unlink()
        raw("DELETE FROM audit_auditevent WHERE seq > 2")
        set_head(2, events[1].hash)
        assert not audit_verify().ok

    def test_an_unkeyed_rewrite_after_the_file_is_lost_is_detected(self, settings):
        # Every event re-hashed the old, unkeyed way, the file deleted: the signed legacy boundary
        # kept in the head row still says no event may be unkeyed.
        events = _record_some(4)
        _checkpoint()
        settings.AXLE_AUDIT_CHECKPOINT_FILE.unlink()
        raw("DELETE FROM audit_auditevent")
        prev = GENESIS
        for event in events:
            prev = insert_event(seq=event.seq, prev_hash=prev, created_at=event.created_at, action="thing.rewritten")
        set_head(4, prev)
        result = audit_verify()
        assert not result.ok and result.bad_seq == 1 and "without the audit key" in result.problem

    def test_an_unkeyed_rewrite_with_the_boundary_cleared_too_is_detected(self, settings):
        events = _record_some(2)
        settings.AXLE_AUDIT_CHECKPOINT_FILE.unlink()
        raw("DELETE FROM audit_auditevent")
        prev = GENESIS
        for event in events:
            prev = insert_event(seq=event.seq, prev_hash=prev, created_at=event.created_at, action="thing.rewritten")
        set_head(2, prev)
        raw("UPDATE audit_auditchainhead SET legacy_boundary = ''")
        result = audit_verify()
        assert not result.ok and result.bad_seq == 1 and "no signed checkpoint covers" in result.problem

    def test_a_forged_boundary_in_the_head_row_is_detected(self):
        _record_some(2)
        head = AuditChainHead.objects.get(pk=1)
        raw(
            "UPDATE audit_auditchainhead SET legacy_boundary = %s",
            [head.legacy_boundary.replace('"seq": 0', '"seq": 2')],
        )
        result = audit_verify()
        assert not result.ok and "legacy boundary" in result.problem


@pytest.mark.django_db
class TestTampering:
    """Every tampering the security review tried (issue 8, finding 5) is detected."""

    def test_it_detects_an_edited_row(self):
        _record_some(5)
        raw("UPDATE audit_auditevent SET after = %s WHERE seq = 3", [json.dumps({"i": 99})])
        result = audit_verify()
        assert not result.ok and result.bad_seq == 3
        assert "modified" in result.problem
        with pytest.raises(CommandError, match="#3"):
            call_command("audit_verify")

    def test_it_detects_an_edited_actor(self, alice, bob):
        _record_some(3, actor=alice)
        raw("UPDATE audit_auditevent SET actor_username = 'bob' WHERE seq = 2")
        assert audit_verify().bad_seq == 2

    def test_it_detects_a_deleted_row(self):
        _record_some(5)
        raw("DELETE FROM audit_auditevent WHERE seq = 2")
        result = audit_verify()
        assert not result.ok and result.bad_seq == 3
        assert "missing" in result.problem

    def test_it_detects_a_deleted_tail(self):
        _record_some(5)
        raw("DELETE FROM audit_auditevent WHERE seq = 5")
        result = audit_verify()
        assert not result.ok and "end" in result.problem

    def test_it_detects_a_truncated_tail_with_the_head_moved_back(self):
        events = _record_some(5)
        _checkpoint()
        raw("DELETE FROM audit_auditevent WHERE seq >= 4")
        set_head(3, events[2].hash)
        result = audit_verify()
        assert not result.ok and "checkpoint recorded #5" in result.problem

    def test_it_detects_an_inserted_row(self):
        events = _record_some(4)
        # A forged event slipped in as #3, everything after renumbered.
        raw("UPDATE audit_auditevent SET seq = seq + 100 WHERE seq >= 3")
        raw("UPDATE audit_auditevent SET seq = seq - 99 WHERE seq >= 100")
        insert_event(
            seq=3,
            prev_hash=events[1].hash,
            created_at=events[2].created_at,
            action="thing.forged",
            version=2,
            key_id=events[1].key_id,
        )
        set_head(5, events[3].hash)
        result = audit_verify()
        assert not result.ok and result.bad_seq == 3
        assert "forged" in result.problem

    def test_it_detects_reordered_rows(self):
        _record_some(4)
        raw("UPDATE audit_auditevent SET seq = 100 WHERE seq = 2")
        raw("UPDATE audit_auditevent SET seq = 2 WHERE seq = 3")
        raw("UPDATE audit_auditevent SET seq = 3 WHERE seq = 100")
        result = audit_verify()
        assert not result.ok and result.bad_seq == 2

    def test_it_detects_an_appended_event_with_a_correct_plain_hash_and_the_head_moved(self):
        # The review's attack: sha256(prev_hash + canonical(event)) computed by hand, the
        # head row updated to match. Without the key only an unkeyed link can be computed.
        events = _record_some(3)
        forged = insert_event(seq=4, prev_hash=events[-1].hash, created_at=events[-1].created_at, action="user.x")
        set_head(4, forged)
        result = audit_verify()
        assert not result.ok and result.bad_seq == 4 and "without the audit key" in result.problem

    @pytest.mark.parametrize("key_id", ["current", "made-up-key"])
    def test_it_detects_an_appended_event_that_claims_to_be_keyed(self, key_id):
        events = _record_some(3)
        claimed = events[0].key_id if key_id == "current" else key_id
        forged = insert_event(
            seq=4,
            prev_hash=events[-1].hash,
            created_at=events[-1].created_at,
            action="user.x",
            version=2,
            key_id=claimed,
        )
        set_head(4, forged)
        result = audit_verify()
        assert not result.ok and result.bad_seq == 4

    def test_it_detects_a_rewritten_head_row(self):
        events = _record_some(4)
        set_head(2, events[1].hash)
        result = audit_verify()
        assert not result.ok and "head" in result.problem

    def test_it_detects_a_whole_chain_re_hashed_without_the_key(self):
        # Rewrite every event as an old-style unkeyed one, content changed, links recomputed.
        events = _record_some(4)
        _checkpoint()
        raw("DELETE FROM audit_auditevent")
        prev = GENESIS
        for event in events:
            prev = insert_event(
                seq=event.seq, prev_hash=prev, created_at=event.created_at, action="thing.rewritten", after={"i": 0}
            )
        set_head(4, prev)
        result = audit_verify()
        assert not result.ok and result.bad_seq == 1 and "without the audit key" in result.problem

    def test_it_detects_new_events_re_hashed_without_the_key_after_a_checkpoint(self):
        events = _record_some(2)
        _checkpoint()
        _record_some(2)
        raw("DELETE FROM audit_auditevent WHERE seq > 2")
        prev = events[-1].hash
        for seq in (3, 4):
            prev = insert_event(seq=seq, prev_hash=prev, created_at=events[-1].created_at, action="thing.rewritten")
        set_head(4, prev)
        result = audit_verify()
        assert not result.ok and result.bad_seq == 3 and "without the audit key" in result.problem

    def test_it_detects_history_rewritten_with_the_key_against_earlier_checkpoints(self):
        # Even someone holding the key (an insider) cannot make the chain agree with the
        # checkpoints signed before the rewrite.
        events = _record_some(4)
        _checkpoint()
        key_id, key = audit_keys.current()
        raw("DELETE FROM audit_auditevent")
        prev = GENESIS
        for event in events:
            prev = insert_event(
                seq=event.seq,
                prev_hash=prev,
                created_at=event.created_at,
                action="thing.rewritten",
                key_id=key_id,
                sign_with=key,
            )
        set_head(4, prev)
        result = audit_verify()
        assert not result.ok and result.bad_seq == 4 and "differs from the signed checkpoint" in result.problem


@pytest.mark.django_db
def test_one_host_makes_its_audit_key_once_readable_by_the_hub_only(settings, tmp_path):
    settings.AXLE_AUDIT_KEY = ""
    settings.AXLE_AUDIT_KEY_AUTOCREATE = True
    settings.AXLE_HUB_DIR = tmp_path
    audit_keys.reset_cache()
    try:
        first = audit_keys.current()
        audit_keys.reset_cache()
        assert audit_keys.current() == first  # kept, not made again
        key_file = tmp_path / "audit.key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert first[1] == key_file.read_text().encode() and len(first[1]) >= 32
        assert audit_record(action="thing.created").key_id == first[0]
    finally:
        audit_keys.reset_cache()


def test_without_a_key_and_outside_one_host_it_refuses_to_start(settings):
    from django.core.exceptions import ImproperlyConfigured

    settings.AXLE_AUDIT_KEY = ""
    settings.AXLE_AUDIT_KEY_AUTOCREATE = False
    audit_keys.reset_cache()
    try:
        with pytest.raises(ImproperlyConfigured, match="AXLE_AUDIT_KEY"):
            audit_keys.current()
        settings.AXLE_AUDIT_KEY = "too-short"
        audit_keys.reset_cache()
        with pytest.raises(ImproperlyConfigured, match="shorter than 32"):
            audit_keys.current()
    finally:
        audit_keys.reset_cache()

"""The chain: canonical form of an event, its link to the one before, and verification.

Version 1 (the first events of trails made before the chain was keyed) links with a plain
``sha256(prev_hash + canonical(event))``: anyone who can write the database can recompute it.
Version 2 links with ``HMAC-SHA256(audit key, prev_hash + canonical(event))``, the key being
outside the database (apps.audit.keys), and its canonical form keeps timestamps to the
millisecond, which every database and Django's JSON serializer keep, so a trail moved with
dumpdata/loaddata still verifies. A version-1 event may never follow a version-2 one."""

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from . import keys as audit_keys

GENESIS = "0" * 64
CURRENT_VERSION = 2


def _integral_floats_as_ints(value):
    # PostgreSQL's jsonb keeps numbers as numerics: a float 1e20 read back is the int
    # 100000000000000000000. Writing integral floats as ints makes both spellings hash alike.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral_floats_as_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral_floats_as_ints(v) for v in value]
    return value


def canonical(
    *,
    seq,
    uuid,
    created_at: datetime,
    actor_id,
    actor_username,
    action,
    subject_type,
    subject_id,
    subject_text,
    request_id,
    before,
    after,
    version: int = 1,
    key_id: str = "",
) -> str:
    payload = {
        "seq": int(seq),
        "uuid": str(uuid),
        "created_at": created_at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor_id": actor_id,
        "actor_username": actor_username,
        "action": action,
        "subject_type": subject_type,
        "subject_id": subject_id,
        "subject_text": subject_text,
        "request_id": request_id,
        "before": before,
        "after": after,
    }
    if version >= 2:
        payload.update(
            version=version,
            key_id=key_id,
            created_at=created_at.astimezone(UTC).isoformat(timespec="milliseconds"),
            before=_integral_floats_as_ints(before),
            after=_integral_floats_as_ints(after),
        )
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, canonical_text: str) -> str:
    """The version-1 link: a plain digest, kept only to verify old events."""
    return hashlib.sha256((prev_hash + canonical_text).encode("utf-8")).hexdigest()


class UnknownKey(Exception):
    pass


def event_hash(event, prev_hash: str, keys: dict[str, bytes] | None = None) -> str:
    version = getattr(event, "version", 1) or 1
    text = canonical(
        seq=event.seq,
        uuid=event.uuid,
        created_at=event.created_at,
        actor_id=event.actor_id,
        actor_username=event.actor_username,
        action=event.action,
        subject_type=event.subject_type,
        subject_id=event.subject_id,
        subject_text=event.subject_text,
        request_id=event.request_id,
        before=event.before,
        after=event.after,
        version=version,
        key_id=getattr(event, "key_id", ""),
    )
    if version == 1:
        return chain_hash(prev_hash, text)
    key = (keys if keys is not None else audit_keys.by_id()).get(event.key_id)
    if key is None:
        raise UnknownKey(event.key_id)
    return audit_keys.sign(key, "chain", prev_hash + text)


@dataclass(frozen=True)
class Verification:
    ok: bool
    count: int
    head_hash: str
    bad_seq: int | None = None
    problem: str = ""
    checkpoints: int = 0


def verify(
    events: Iterable,
    head_seq: int,
    head_hash: str,
    *,
    start_seq: int = 0,
    start_hash: str = GENESIS,
    expected: dict[int, str] | None = None,
    keys: dict[str, bytes] | None = None,
    legacy_until: int | None = None,
) -> Verification:
    """Walk ``events`` (ordered by seq, starting after ``start_seq``) and check every link.

    An edited row no longer matches its own hash; a deleted, inserted or reordered row
    breaks the sequence or the link to its predecessor; a cut-off tail no longer reaches
    the recorded head. ``expected`` maps sequence numbers to the hashes signed checkpoints
    recorded for them: a history re-hashed from some point on (even with the key) differs there.
    Unkeyed (version-1) events beyond ``legacy_until`` are refused: once a signed checkpoint
    exists, only the old events it covers may be unkeyed."""
    keys = audit_keys.by_id() if keys is None else keys
    expected = expected or {}
    prev_hash = start_hash
    expected_seq = start_seq + 1
    count = start_seq
    keyed = False

    def broken(seq, problem):
        return Verification(False, count, prev_hash, seq, problem)

    for event in events:
        if event.seq != expected_seq:
            if event.seq > expected_seq:
                return broken(
                    event.seq, f"event #{expected_seq} is missing (the chain jumps to #{event.seq}): a row was deleted"
                )
            return broken(event.seq, f"event #{event.seq} appears out of order")
        if event.prev_hash != prev_hash:
            return broken(
                event.seq,
                f"event #{event.seq} does not link to the event before it: a row was inserted, deleted or reordered",
            )
        version = getattr(event, "version", 1) or 1
        if version == 1 and keyed:
            return broken(
                event.seq,
                f"event #{event.seq} carries an unkeyed hash after keyed events: it was added without the audit key",
            )
        if version == 1 and legacy_until is not None and event.seq > legacy_until:
            return broken(
                event.seq,
                f"event #{event.seq} carries an unkeyed hash that no signed checkpoint covers: "
                "it was written or re-hashed without the audit key",
            )
        keyed = keyed or version >= 2
        try:
            computed = event_hash(event, prev_hash, keys)
        except UnknownKey:
            return broken(
                event.seq,
                f"event #{event.seq} is signed with audit key {event.key_id!r}, which is not configured: "
                "it was forged, or an old key was dropped from AXLE_AUDIT_KEY",
            )
        if computed != event.hash:
            return broken(
                event.seq,
                f"event #{event.seq} ({event.action}) was modified or forged: its content no longer matches its hash",
            )
        if event.seq in expected and expected[event.seq] != event.hash:
            return broken(
                event.seq,
                f"event #{event.seq} differs from the signed checkpoint that recorded it: the history was rewritten",
            )
        prev_hash = event.hash
        expected_seq += 1
        count += 1
    beyond = [seq for seq in expected if seq > count]
    if beyond:
        return Verification(
            False,
            count,
            prev_hash,
            count + 1,
            f"the chain ends at #{count} but a signed checkpoint recorded #{max(beyond)}: events were cut off the end",
        )
    if count != head_seq or prev_hash != head_hash:
        return Verification(
            False,
            count,
            prev_hash,
            count + 1,
            f"the chain ends at #{count} but the recorded head is #{head_seq}: "
            "events were removed from or added to the end, or the head row was rewritten",
        )
    return Verification(True, count, prev_hash)

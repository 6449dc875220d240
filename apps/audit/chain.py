"""The hash chain: canonical form of an event and verification of the whole trail."""

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

GENESIS = "0" * 64


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
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, canonical_text: str) -> str:
    return hashlib.sha256((prev_hash + canonical_text).encode("utf-8")).hexdigest()


def event_hash(event, prev_hash: str) -> str:
    return chain_hash(
        prev_hash,
        canonical(
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
        ),
    )


@dataclass(frozen=True)
class Verification:
    ok: bool
    count: int
    head_hash: str
    bad_seq: int | None = None
    problem: str = ""


def verify(events, head_seq: int, head_hash: str) -> Verification:
    """Walk ``events`` (ordered by seq) and check every link.

    An edited row no longer matches its own hash; a deleted, inserted or reordered row
    breaks the sequence or the link to its predecessor; a cut-off tail no longer reaches
    the recorded head."""
    prev_hash = GENESIS
    expected_seq = 1
    count = 0
    for event in events:
        if event.seq != expected_seq:
            if event.seq > expected_seq:
                problem = f"event #{expected_seq} is missing (the chain jumps to #{event.seq}): a row was deleted"
            else:
                problem = f"event #{event.seq} appears out of order"
            return Verification(False, count, prev_hash, event.seq, problem)
        if event.prev_hash != prev_hash:
            return Verification(
                False,
                count,
                prev_hash,
                event.seq,
                f"event #{event.seq} does not link to the event before it: a row was inserted, deleted or reordered",
            )
        if event_hash(event, prev_hash) != event.hash:
            return Verification(
                False,
                count,
                prev_hash,
                event.seq,
                f"event #{event.seq} ({event.action}) was modified: its content no longer matches its hash",
            )
        prev_hash = event.hash
        expected_seq += 1
        count += 1
    if count != head_seq or prev_hash != head_hash:
        return Verification(
            False,
            count,
            prev_hash,
            count + 1,
            f"the chain ends at #{count} but the recorded head is #{head_seq}: "
            "events were removed from or added to the end",
        )
    return Verification(True, count, prev_hash)

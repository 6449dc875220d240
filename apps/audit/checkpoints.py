"""Signed checkpoints of the chain, kept outside the database.

Each line of the checkpoint file (AXLE_AUDIT_CHECKPOINT_FILE) records a sequence number and
the hash the chain had there, when, under which key, and an HMAC of all that with the audit
key. The file is only ever opened with O_APPEND, so the hub never rewrites what it wrote; on
Linux root makes it append-only for everybody (``chattr +a``, which ``./dev up`` sets). Someone
who rewrites the database, even holding the key, cannot make the chain agree with checkpoints
written before.

One line is special: the legacy boundary (``"legacy": true``), signed when the chain's first
keyed event is appended (or by migration 0003 for a trail that already had events). It says up
to which event the chain may be unkeyed (version 1); it is kept in the database's head row too,
so losing the file does not let a chain re-hashed without the key pass as an old trail."""

import hmac
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings

from . import keys as audit_keys


@dataclass(frozen=True)
class Checkpoint:
    line: int
    seq: int
    hash: str
    at: str
    key_id: str
    legacy: bool = False

    def record(self, key: bytes) -> dict:
        record = {"seq": self.seq, "hash": self.hash, "at": self.at, "key_id": self.key_id}
        if self.legacy:
            record["legacy"] = True
        record["mac"] = audit_keys.sign(
            key, _purpose(self.legacy), _signed_text(self.seq, self.hash, self.at, self.key_id)
        )
        return record


class CheckpointForged(Exception):
    def __init__(self, line: int, reason: str):
        super().__init__(f"line {line} of the checkpoint file {reason}: the file was edited")
        self.line = line


def checkpoint_path() -> Path:
    return Path(settings.AXLE_AUDIT_CHECKPOINT_FILE)


def _purpose(legacy: bool) -> str:
    return "legacy-boundary" if legacy else "checkpoint"


def _signed_text(seq: int, hash_: str, at: str, key_id: str) -> str:
    return f"{seq}|{hash_}|{at}|{key_id}"


def checkpoint_sign(*, seq: int, hash_: str, legacy: bool = False) -> str:
    """One signed checkpoint line (without its newline)."""
    key_id, key = audit_keys.current()
    at = datetime.now(UTC).isoformat(timespec="seconds")
    return json.dumps(Checkpoint(0, seq, hash_, at, key_id, legacy).record(key), sort_keys=True)


def checkpoint_append(*, seq: int, hash_: str) -> Checkpoint:
    line = checkpoint_sign(seq=seq, hash_=hash_)
    checkpoint_line_append(line)
    return checkpoint_parse(line)


def checkpoint_line_append(line: str) -> None:
    path = checkpoint_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # One write() of one line on an O_APPEND descriptor: concurrent writers never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_parse(line: str, number: int = 0, keys: dict[str, bytes] | None = None) -> Checkpoint:
    """One line, its signature checked; raises CheckpointForged."""
    keys = audit_keys.by_id() if keys is None else keys
    try:
        record = json.loads(line)
        seq, hash_, at, key_id, mac = (
            int(record["seq"]),
            str(record["hash"]),
            str(record["at"]),
            str(record["key_id"]),
            str(record["mac"]),
        )
        legacy = record.get("legacy", False) is True
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointForged(number, "is not a checkpoint") from exc
    key = keys.get(key_id)
    if key is None:
        raise CheckpointForged(number, f"is signed with an unknown audit key {key_id!r}")
    signed = audit_keys.sign(key, _purpose(legacy), _signed_text(seq, hash_, at, key_id))
    if not hmac.compare_digest(mac, signed):
        raise CheckpointForged(number, "does not match its signature")
    return Checkpoint(number, seq, hash_, at, key_id, legacy)


def checkpoint_lines() -> list[Checkpoint] | None:
    """Every line of the file (checkpoints and legacy boundaries), each one's signature
    checked; None when the file does not exist. Raises CheckpointForged."""
    path = checkpoint_path()
    if not path.exists():
        return None
    keys = audit_keys.by_id()
    with path.open() as fh:
        return [checkpoint_parse(line, number, keys) for number, line in enumerate(fh, start=1) if line.strip()]


def checkpoint_list() -> list[Checkpoint]:
    """Every ordinary checkpoint in the file (not the legacy boundary); raises CheckpointForged."""
    return [cp for cp in checkpoint_lines() or [] if not cp.legacy]

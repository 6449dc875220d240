"""Signed checkpoints of the chain, kept outside the database.

Each line of the checkpoint file (AXLE_AUDIT_CHECKPOINT_FILE) records a sequence number and
the hash the chain had there, when, under which key, and an HMAC of all that with the audit
key. The file is only ever opened with O_APPEND, so the hub never rewrites what it wrote; on
Linux root can make it append-only for everybody (``chattr +a``). Someone who rewrites the
database, even holding the key, cannot make the chain agree with checkpoints written before."""

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


class CheckpointForged(Exception):
    def __init__(self, line: int, reason: str):
        super().__init__(f"line {line} of the checkpoint file {reason}: the file was edited")
        self.line = line


def checkpoint_path() -> Path:
    return Path(settings.AXLE_AUDIT_CHECKPOINT_FILE)


def _signed_text(seq: int, hash_: str, at: str, key_id: str) -> str:
    return f"{seq}|{hash_}|{at}|{key_id}"


def checkpoint_append(*, seq: int, hash_: str) -> Checkpoint:
    key_id, key = audit_keys.current()
    at = datetime.now(UTC).isoformat(timespec="seconds")
    record = {"seq": seq, "hash": hash_, "at": at, "key_id": key_id}
    record["mac"] = audit_keys.sign(key, "checkpoint", _signed_text(seq, hash_, at, key_id))
    path = checkpoint_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # One write() of one line on an O_APPEND descriptor: concurrent writers never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return Checkpoint(0, seq, hash_, at, key_id)


def checkpoint_list() -> list[Checkpoint]:
    """Every checkpoint in the file, each one's signature checked; raises CheckpointForged."""
    path = checkpoint_path()
    if not path.exists():
        return []
    keys = audit_keys.by_id()
    found = []
    with path.open() as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                seq, hash_, at, key_id, mac = (
                    int(record["seq"]),
                    str(record["hash"]),
                    str(record["at"]),
                    str(record["key_id"]),
                    str(record["mac"]),
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise CheckpointForged(number, "is not a checkpoint") from exc
            key = keys.get(key_id)
            if key is None:
                raise CheckpointForged(number, f"is signed with an unknown audit key {key_id!r}")
            if not hmac.compare_digest(mac, audit_keys.sign(key, "checkpoint", _signed_text(seq, hash_, at, key_id))):
                raise CheckpointForged(number, "does not match its signature")
            found.append(Checkpoint(number, seq, hash_, at, key_id))
    return found

"""The audit key: the secret that signs the chain and its checkpoints, kept out of the database.

AXLE_AUDIT_KEY (or AXLE_AUDIT_KEY_FILE) holds one key, or several separated by commas, newest
first. The first signs new events and checkpoints; older ones only verify what they signed.
Each event stores the id of its key (a digest of the key, never the key), so rotation is: put a
new key in front, keep the old one behind it for as long as its events must verify. On one host
without configuration a key is made once in the hub's folder (like the encryption key); in
production it is required."""

import hashlib
import hmac
import os
import secrets
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def key_id(key: bytes) -> str:
    # A digest of the key names it without revealing it; 12 hex digits tell keys apart.
    return hashlib.sha256(b"axle-audit-key-id:" + key).hexdigest()[:12]


def _configured() -> list[bytes]:
    configured = getattr(settings, "AXLE_AUDIT_KEY", "") or ""
    keys = [k.strip().encode("utf-8") for k in configured.split(",") if k.strip()]
    if keys:
        if any(len(k) < 32 for k in keys):
            raise ImproperlyConfigured(
                "AXLE_AUDIT_KEY holds a key shorter than 32 characters: generate one with "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return keys
    if not getattr(settings, "AXLE_AUDIT_KEY_AUTOCREATE", False):
        raise ImproperlyConfigured(
            "AXLE_AUDIT_KEY (or AXLE_AUDIT_KEY_FILE) must be set: it signs the audit trail and must not live in "
            "the database. Generate one with python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    path = Path(settings.AXLE_HUB_DIR) / "audit.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes starting at once must not each write a different key; 0600
        # from the start, never readable by others even for a moment.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(32))
    return [path.read_text().strip().encode("utf-8")]


@lru_cache(maxsize=1)
def _keys() -> tuple[tuple[str, bytes], ...]:
    return tuple((key_id(k), k) for k in _configured())


def reset_cache() -> None:
    _keys.cache_clear()


def current() -> tuple[str, bytes]:
    """The (id, key) that signs from now on."""
    return _keys()[0]


def by_id() -> dict[str, bytes]:
    return dict(_keys())


def sign(key: bytes, purpose: str, text: str) -> str:
    # The purpose keeps a chain link from ever being replayed as a checkpoint, and back.
    return hmac.new(key, f"{purpose}\n{text}".encode(), hashlib.sha256).hexdigest()

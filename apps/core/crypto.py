"""Encryption of secrets at rest (SSH private keys, tokens, JWT signing keys).

Keys come from AXLE_ENCRYPTION_KEYS (comma-separated Fernet keys, newest first; or
AXLE_ENCRYPTION_KEYS_FILE). Older keys still decrypt, the first encrypts; after adding a new
key in front, `manage.py rotate_secrets` re-encrypts everything with it. On one host without
configuration a key is made once in the hub's folder."""

import os
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class SecretUnreadable(Exception):
    """A stored secret cannot be decrypted with any configured key."""


def _load_keys() -> list[bytes]:
    configured = getattr(settings, "AXLE_ENCRYPTION_KEYS", None) or []
    if configured:
        return [k.encode() for k in configured]
    if not getattr(settings, "AXLE_ENCRYPTION_KEY_AUTOCREATE", False):
        raise ImproperlyConfigured(
            "AXLE_ENCRYPTION_KEYS (or AXLE_ENCRYPTION_KEYS_FILE) must be set: generate a key with "
            "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
        )
    path = Path(settings.AXLE_HUB_DIR) / "encryption.key"
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Created 0600, never readable by others for an instant.
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
            fh.write(Fernet.generate_key())
    return [path.read_bytes().strip()]


@lru_cache(maxsize=1)
def _fernet() -> MultiFernet:
    try:
        return MultiFernet([Fernet(k) for k in _load_keys()])
    except ValueError as exc:
        raise ImproperlyConfigured(f"AXLE_ENCRYPTION_KEYS holds a value that is not a Fernet key: {exc}") from exc


def reset_cache() -> None:
    _fernet.cache_clear()


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode("utf-8")).decode("ascii")


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode("ascii")).decode("utf-8")
    except InvalidToken as exc:
        raise SecretUnreadable("A stored secret cannot be decrypted with the configured keys.") from exc


def rotate(token: str) -> str:
    """Re-encrypt with the newest key (a no-op for text already under it, apart from the IV)."""
    try:
        return _fernet().rotate(token.encode("ascii")).decode("ascii")
    except InvalidToken as exc:
        raise SecretUnreadable("A stored secret cannot be decrypted with the configured keys.") from exc

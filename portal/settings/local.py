"""The embedded one-host default that `./dev up` runs."""

import os
import secrets

from .base import *  # noqa: F403
from .base import AXLE_HUB_DIR, SECRET_KEY

if not SECRET_KEY:
    # One host, one key: made once and kept beside the database so sessions survive restarts.
    _key_file = AXLE_HUB_DIR / "secret_key"
    if not _key_file.exists():
        _key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Created 0600, never readable by others for an instant.
        with os.fdopen(os.open(_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as _fh:
            _fh.write(secrets.token_urlsafe(50))
    SECRET_KEY = _key_file.read_text().strip()

# One host: the encryption key for secrets at rest is made once beside the database too.
AXLE_ENCRYPTION_KEY_AUTOCREATE = True
# And the audit key that signs the audit chain (hub/audit.key).
AXLE_AUDIT_KEY_AUTOCREATE = True

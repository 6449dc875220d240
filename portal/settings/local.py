"""The embedded one-host default that `./dev up` runs."""

import secrets

from .base import *  # noqa: F403
from .base import AXLE_HUB_DIR, SECRET_KEY

if not SECRET_KEY:
    # One host, one key: made once and kept beside the database so sessions survive restarts.
    _key_file = AXLE_HUB_DIR / "secret_key"
    if not _key_file.exists():
        _key_file.parent.mkdir(parents=True, exist_ok=True)
        _key_file.write_text(secrets.token_urlsafe(50))
        _key_file.chmod(0o600)
    SECRET_KEY = _key_file.read_text().strip()

# One host: the encryption key for secrets at rest is made once beside the database too.
AXLE_ENCRYPTION_KEY_AUTOCREATE = True
# And the audit key that signs the audit chain (hub/audit.key).
AXLE_AUDIT_KEY_AUTOCREATE = True

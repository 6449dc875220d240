"""Settings for the test suite: PostgreSQL through DATABASE_URL (as in CI) or SQLite."""

import tempfile
from pathlib import Path

from .base import *  # noqa: F403
from .base import DATABASES, Q_CLUSTER

SECRET_KEY = "test-only-not-secret-" + "x" * 40
DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
STATIC_ROOT = Path(tempfile.gettempdir()) / "axle-test-static"
STATIC_ROOT.mkdir(exist_ok=True)
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# A connection per request, as Django's default: the suite's live servers, threads and inline
# tasks must not keep connections open past a test (the test database could not be dropped).
DATABASES["default"]["CONN_MAX_AGE"] = 0
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": str(Path(tempfile.gettempdir()) / "axle-test.sqlite3")}
AXLE_AUDIT_KEY = "test-only-audit-key-" + "k" * 32
AXLE_AUDIT_CHECKPOINT_FILE = Path(tempfile.gettempdir()) / "axle-test-audit-checkpoints.log"
AXLE_ENCRYPTION_KEYS = ["h2vJ0t1mJb0c1kqW2oZkQmPz3sV8oJ5cJ8m3Qk9rV0Y="]
# Tasks run inline when their transaction commits, so tests see their effect at once.
Q_CLUSTER = {**Q_CLUSTER, "sync": True}
AXLE_SUBMIT_BACKOFF_SECONDS = 1
# Model servers started by tests run as a pool of their own (compose/local/stack.sh makes it), so
# the suite never takes, or stops, the slot of a server the demo from ./dev up is running.
AXLE_MODEL_SERVER_USER = "axle-tserve"

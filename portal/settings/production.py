"""Production: everything secret or host-specific must come from the environment."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import SECRET_KEY, env

if not SECRET_KEY or SECRET_KEY.startswith(("django-insecure", "test-only", "change-me")) or len(SECRET_KEY) < 50:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) must be set to a random value of at least 50 characters "
        "in production; generate one with: python -c 'import secrets; print(secrets.token_urlsafe(50))'"
    )

DEBUG = False
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

from .base import AXLE_ENCRYPTION_KEYS  # noqa: E402

if not AXLE_ENCRYPTION_KEYS:
    raise ImproperlyConfigured(
        "AXLE_ENCRYPTION_KEYS (or AXLE_ENCRYPTION_KEYS_FILE) must be set in production: it encrypts cluster "
        "credentials at rest. Generate one with: python -c 'from cryptography.fernet import Fernet; "
        "print(Fernet.generate_key().decode())'"
    )

from .base import AXLE_AUDIT_KEY  # noqa: E402

if not AXLE_AUDIT_KEY:
    raise ImproperlyConfigured(
        "AXLE_AUDIT_KEY (or AXLE_AUDIT_KEY_FILE) must be set in production: it signs the audit trail and must be "
        "kept outside the database. Generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
    )

from .base import AXLE_MLFLOW_PASSWORD, AXLE_MLFLOW_USERNAME  # noqa: E402

if not (AXLE_MLFLOW_USERNAME and AXLE_MLFLOW_PASSWORD):
    raise ImproperlyConfigured(
        "AXLE_MLFLOW_USERNAME and AXLE_MLFLOW_PASSWORD (or AXLE_MLFLOW_PASSWORD_FILE) must be set in production: "
        "the hub logs in to MLflow as its admin and gives each job a login of its own. An MLflow server without "
        "its login (`mlflow server --app-name basic-auth`) lets every job read and write every team's runs."
    )

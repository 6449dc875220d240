"""Settings shared by every environment. See README.md for every variable."""

from datetime import timedelta
from pathlib import Path

import environ
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from .env import env, secret

BASE_DIR = Path(__file__).resolve().parent.parent.parent

# One folder holds the hub's state on a host: its SQLite database, logs, pid files, and (for
# the one-host stack) the local cluster's state. The README names it.
AXLE_HOME = Path(env.str("AXLE_HOME", default="/var/lib/axle"))
AXLE_HUB_DIR = Path(env.str("AXLE_HUB_DIR", default=str(AXLE_HOME / "hub")))
# Where compose/local keeps the one-host cluster and its cluster.env.
AXLE_STACK_DIR = Path(env.str("AXLE_STACK_DIR", default=str(AXLE_HOME)))

SECRET_KEY = secret("DJANGO_SECRET_KEY")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "axes",
    "csp",
    "apps.core",
    "apps.accounts",
    "apps.audit",
    "apps.clusters",
    "apps.jobs",
    "apps.datasets",
    "apps.identity",
    "apps.sweeps",
    "apps.usage",
    "apps.pipelines",
    "apps.pipelines.triggers",
    "apps.registry",
    "apps.lineage",
    "apps.serving",
    "apps.hub",
    "apps.demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "apps.accounts.middleware.SessionIdleTimeoutMiddleware",
    "apps.core.middleware.LoginRequiredMiddleware",
    "apps.core.middleware.RequestContextMiddleware",
    "apps.core.middleware.NulRefusedMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its lockout response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
ASGI_APPLICATION = "portal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "apps.core.context_processors.navigation",
                "apps.identity.context_processors.sso",
                "apps.serving.context_processors.approvals_waiting",
            ],
        },
    },
]


def _database() -> dict:
    url = secret("DATABASE_URL", default=f"sqlite:///{AXLE_HUB_DIR / 'db.sqlite3'}")
    try:
        db = environ.Env.db_url_config(url)
    except Exception as exc:  # django-environ raises several types for a bad URL
        raise ImproperlyConfigured(f"DATABASE_URL is not a database URL Axle understands: {exc}") from exc
    if db["ENGINE"] == "django.db.backends.sqlite3":
        # BEGIN IMMEDIATE takes SQLite's write lock when a transaction starts, so two writers
        # queue up instead of both reading the audit chain head and then one failing.
        db.setdefault("OPTIONS", {}).update({"transaction_mode": "IMMEDIATE", "timeout": 20})
    db["ATOMIC_REQUESTS"] = False
    # Each gunicorn thread keeps its connection for DJANGO_CONN_MAX_AGE seconds instead of
    # opening one (a new PostgreSQL backend, ~5-10 ms of both sides' CPU) for every request;
    # the health check replaces one the server closed meanwhile, so a restarted PostgreSQL
    # costs no request an error. 0 closes it after each request (behind PgBouncer in
    # transaction mode). See README, "Deployment: serving the portal".
    db["CONN_MAX_AGE"] = env.int("DJANGO_CONN_MAX_AGE", default=60)
    db["CONN_HEALTH_CHECKS"] = True
    return db


DATABASES = {"default": _database()}
# PostgreSQL: the owner's credentials for the same database. `migrate` runs with them, then
# grants DATABASE_URL's role DML but only SELECT/INSERT on the audit trail (apps/audit/roles.py).
DATABASE_MIGRATE_URL = secret("DATABASE_MIGRATE_URL", default="") or ""
# dumpdata/loaddata keep datetimes to the microsecond, so old audit events survive a move.
SERIALIZATION_MODULES = {"json": "apps.audit.serializers_json", "jsonl": "apps.audit.serializers_jsonl"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes counts failed logins (the login page, the admin's and the API token exchange) and
# locks out a username, and separately an address, after AXLE_LOGIN_FAILURE_LIMIT failures for
# AXLE_LOGIN_LOCKOUT_SECONDS; each lockout is audited (apps/accounts/signals.py).
# Single sign-on (apps/identity; README "Single sign-on"). Off unless configured. Local
# passwords stay on for everyone unless AXLE_LOCAL_PASSWORDS=break-glass, which keeps them only
# for the users named in AXLE_BREAK_GLASS_USERS (an administrator for when the directory is down).
AXLE_LOCAL_PASSWORDS = env.str("AXLE_LOCAL_PASSWORDS", default="all")
AXLE_BREAK_GLASS_USERS = env.list("AXLE_BREAK_GLASS_USERS", default=[])
# Directory groups -> teams and roles, applied at each sign-in and by the LDAP sync: a JSON
# object {"group (OIDC claim value, LDAP group cn or DN)": "team:role", ...}, role one of
# member, approver, admin. Only the teams it names are managed by the directory.
AXLE_SSO_GROUP_MAP = env.json("AXLE_SSO_GROUP_MAP", default={})

AXLE_OIDC_ISSUER = env.str("AXLE_OIDC_ISSUER", default="")
AXLE_OIDC_NAME = env.str("AXLE_OIDC_NAME", default="single sign-on")
AXLE_OIDC_USERNAME_CLAIM = env.str("AXLE_OIDC_USERNAME_CLAIM", default="preferred_username")
AXLE_OIDC_GROUPS_CLAIM = env.str("AXLE_OIDC_GROUPS_CLAIM", default="groups")
AXLE_OIDC_LEEWAY_SECONDS = env.int("AXLE_OIDC_LEEWAY_SECONDS", default=30)
OIDC_RP_CLIENT_ID = env.str("AXLE_OIDC_CLIENT_ID", default="")
OIDC_RP_CLIENT_SECRET = secret("AXLE_OIDC_CLIENT_SECRET", default="")
OIDC_RP_SCOPES = env.str("AXLE_OIDC_SCOPES", default="openid email profile groups")
OIDC_RP_SIGN_ALGO = env.str("AXLE_OIDC_SIGN_ALGO", default="RS256")
OIDC_USE_PKCE = True
OIDC_USE_NONCE = True
OIDC_TIMEOUT = 10
OIDC_CALLBACK_CLASS = "apps.identity.oidc.CallbackView"
OIDC_AUTHENTICATE_CLASS = "apps.identity.oidc.AuthenticateView"
LOGIN_REDIRECT_URL_FAILURE = "/sso/failed/"
# Endpoints come from the issuer's discovery document (apps.identity.oidc.discovery); these
# placeholders only satisfy mozilla-django-oidc's checks at start-up.
OIDC_OP_AUTHORIZATION_ENDPOINT = OIDC_OP_TOKEN_ENDPOINT = OIDC_OP_USER_ENDPOINT = ""
OIDC_OP_JWKS_ENDPOINT = "discovered"

AXLE_LDAP_URI = env.str("AXLE_LDAP_URI", default="")
AUTH_LDAP_SERVER_URI = AXLE_LDAP_URI
AUTH_LDAP_BIND_DN = env.str("AXLE_LDAP_BIND_DN", default="")
AUTH_LDAP_BIND_PASSWORD = secret("AXLE_LDAP_BIND_PASSWORD", default="")
AUTH_LDAP_START_TLS = env.bool("AXLE_LDAP_START_TLS", default=False)
AXLE_LDAP_USER_BASE = env.str("AXLE_LDAP_USER_BASE", default="")
AXLE_LDAP_USER_FILTER = env.str("AXLE_LDAP_USER_FILTER", default="(uid=%(user)s)")
AXLE_LDAP_GROUP_BASE = env.str("AXLE_LDAP_GROUP_BASE", default="")
AXLE_LDAP_GROUP_TYPE = env.str("AXLE_LDAP_GROUP_TYPE", default="groupOfNames")  # or posixGroup
AXLE_LDAP_CA_FILE = env.str("AXLE_LDAP_CA_FILE", default="")
AUTH_LDAP_USER_ATTR_MAP = {"first_name": "givenName", "last_name": "sn", "email": "mail"}
AUTH_LDAP_ALWAYS_UPDATE_USER = True
AUTH_LDAP_FIND_GROUP_PERMS = False
AUTH_LDAP_CACHE_TIMEOUT = 0

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    *(["apps.identity.ldap.DirectoryLDAPBackend"] if AXLE_LDAP_URI else []),
    *(["apps.identity.oidc.DirectoryOIDCBackend"] if AXLE_OIDC_ISSUER else []),
    "apps.identity.backends.LocalPasswordBackend",
]
AXES_FAILURE_LIMIT = env.int("AXLE_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(seconds=env.int("AXLE_LOGIN_LOCKOUT_SECONDS", default=900))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_DISABLE_ACCESS_LOG = True  # successful logins are in the audit trail already
AXES_CLIENT_IP_CALLABLE = "apps.accounts.security.client_ip"
AXES_LOCKOUT_CALLABLE = "apps.accounts.security.lockout_response"
AXES_VERBOSE = False
# Behind N reverse proxies that each append to X-Forwarded-For, the client is the Nth address
# from the right; 0 (no proxy) uses the connection's own address.
AXLE_TRUSTED_PROXIES = env.int("AXLE_TRUSTED_PROXIES", default=0)

# Sessions end after DJANGO_SESSION_AGE seconds whatever happens, and after
# AXLE_SESSION_IDLE_SECONDS without a request (apps/accounts/middleware.py).
SESSION_COOKIE_AGE = env.int("DJANGO_SESSION_AGE", default=8 * 3600)
AXLE_SESSION_IDLE_SECONDS = env.int("AXLE_SESSION_IDLE_SECONDS", default=30 * 60)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"

# A failed CSRF check shows the branded page with a way back (JSON under /api/).
CSRF_FAILURE_VIEW = "apps.core.views.csrf_failure"

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("DJANGO_TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("DJANGO_STATIC_ROOT", default=str(AXLE_HUB_DIR / "static")))
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.accounts.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "apps.core.schema.AxleAutoSchema",
    "EXCEPTION_HANDLER": "apps.core.api.exception_handler",
    # The API speaks JSON only, as its schema says; the dashboard's forms are Django views.
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "DEFAULT_PAGINATION_CLASS": "apps.core.pagination.Pagination",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Axle API",
    "DESCRIPTION": "MLOps on Slurm clusters. Authenticate with `Authorization: Token <key>`.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI is served from our own static files: no CDN, works offline and behind firewalls.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # Request bodies get their own components, so required text fields say they may not be blank.
    "COMPONENT_SPLIT_REQUEST": True,
    # OpenAPI 3.1 is JSON Schema: it can say which names a job parameter may have (propertyNames).
    "OAS_VERSION": "3.1.0",
}

# Content-Security-Policy (django-csp 4): only the hub's own scripts and styles, no inline code.
# Pages that need an inline block (the API docs) mark it with the per-request nonce.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, NONCE],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# Background work. The ORM broker needs nothing but the database; set AXLE_REDIS_URL to use
# Redis and run many workers.
AXLE_REDIS_URL = env.str("AXLE_REDIS_URL", default="")
# No task is the only memory of a job: the re-drive (apps/jobs/services/redrive.py, every
# AXLE_REDRIVE_SECONDS) takes over any job whose work is not in flight, so django-q2's own
# redelivery is a last resort, not what recovery waits for. `timeout` is the longest task may
# run: a submission that re-verifies a large dataset or hashes an image on the cluster (minutes);
# the tracking loop runs AXLE_TRACK_LOOP_SECONDS (a few minutes). `retry` (when a task taken
# by a dead worker is handed out again) must exceed `timeout`, or a slow live task would be
# run twice at once; one attempt, since every task is safe to run twice but a failing one
# should not loop.
Q_CLUSTER = {
    "name": "axle",
    # Two workers are always busy with the minute-long tracking loops (jobs, sweeps): four
    # leave two for submissions, finalizing and the rest (with two, tasks waited for a loop to end).
    "workers": env.int("AXLE_WORKERS", default=4),
    "timeout": 600,
    "retry": 660,
    "max_attempts": 1,
    "catch_up": False,
    "ack_failures": True,
    # How long the ORM broker's pusher sleeps when the queue is empty: the wait between a
    # request queueing work (a sweep's launch, a job's submission) and a worker starting it.
    # 0.1 s is one indexed SELECT ten times a second per qcluster; Redis blocks instead.
    "poll": env.float("AXLE_QUEUE_POLL_SECONDS", default=0.1),
}
if AXLE_REDIS_URL:
    Q_CLUSTER["redis"] = AXLE_REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# Fernet keys for secrets at rest, newest first. See apps/core/crypto.py.
AXLE_ENCRYPTION_KEYS = [k.strip() for k in (secret("AXLE_ENCRYPTION_KEYS") or "").split(",") if k.strip()]
AXLE_ENCRYPTION_KEY_AUTOCREATE = False

# The audit key signs the chain and its checkpoints; it never goes into the database. One key or
# several, comma-separated, newest first (older ones only verify). See apps/audit/keys.py.
AXLE_AUDIT_KEY = secret("AXLE_AUDIT_KEY") or ""
AXLE_AUDIT_KEY_AUTOCREATE = False
# Signed checkpoints of the chain, appended outside the database (apps/audit/checkpoints.py).
AXLE_AUDIT_CHECKPOINT_FILE = Path(
    env.str("AXLE_AUDIT_CHECKPOINT_FILE", default=str(AXLE_HUB_DIR / "audit" / "checkpoints.log"))
)

# A forge's webhook body larger than this is refused (413) before it is read. GitHub caps its
# own at 25 MB; a push event is a few kB unless it lists thousands of commits.
AXLE_WEBHOOK_MAX_BYTES = env.int("AXLE_WEBHOOK_MAX_BYTES", default=1 << 20)

# Job delivery: back-off after a failed submission (doubles per attempt, at most 15 min);
# how long an unknown submission is searched for by its marker before it is sent again; how
# long "submitting" may last before the worker is presumed dead.
# The grace: squeue (which the marker search asks first) knows a job the moment slurmctld
# accepted it, so the grace only has to cover a sbatch still running when its worker died
# (it is counted from the worker's last heartbeat, before sbatch started; a submission that
# reached slurmctld is answered within MessageTimeout, 10 s by default). 20 s is twice that,
# and lets a dead worker's job go out again well within a minute (at 40 s, the worst return-
# to-convergence of a kill during submission was 75 s in bench/chaos.py; it was 120 s before).
AXLE_SUBMIT_BACKOFF_SECONDS = env.int("AXLE_SUBMIT_BACKOFF_SECONDS", default=15)
# The longest wait between two attempts: after an outage, whatever its length, a waiting job
# goes out within this (plus a tick) of the cluster's return. Was 15 minutes.
AXLE_SUBMIT_BACKOFF_MAX_SECONDS = env.int("AXLE_SUBMIT_BACKOFF_MAX_SECONDS", default=45)
AXLE_RECONCILE_GRACE_SECONDS = env.int("AXLE_RECONCILE_GRACE_SECONDS", default=20)
AXLE_SUBMIT_STUCK_SECONDS = env.int("AXLE_SUBMIT_STUCK_SECONDS", default=120)
# A sweep's first wave goes to Slurm in its POST when the portal process can reach the
# cluster at once: an idle pooled connection, or a new one made within this many seconds.
# Otherwise (or 0) the wave is queued for a worker, as before (apps.sweeps.services).
AXLE_SWEEP_SUBMIT_WAIT_SECONDS = env.float("AXLE_SWEEP_SUBMIT_WAIT_SECONDS", default=1.0)
# The re-drive: how often it runs, and how long a fresh job is left to its own task first.
AXLE_REDRIVE_SECONDS = env.int("AXLE_REDRIVE_SECONDS", default=15)
AXLE_REDRIVE_SETTLE_SECONDS = env.int("AXLE_REDRIVE_SETTLE_SECONDS", default=10)
# How long one tracking loop (apps.jobs.tasks.jobs_track) runs before it queues its successor:
# well under Q_CLUSTER["timeout"], long enough that the wait of its successor behind a busy
# queue is rare (it was a minute; tracking then paused each minute behind a backlog).
AXLE_TRACK_LOOP_SECONDS = env.int("AXLE_TRACK_LOOP_SECONDS", default=295)
# How many queued jobs of one grant a worker delivers in one round trip (one SSH command,
# or that many concurrent slurmrestd requests); 1 submits one job at a time.
AXLE_SUBMIT_BATCH = env.int("AXLE_SUBMIT_BATCH", default=100)

# Local model servers (the one-host serving backend). The hub keeps their state in
# AXLE_SERVING_DIR (its own, 0700); each server runs as a user of its own from a pool of
# AXLE_MODEL_SERVER_POOL users named AXLE_MODEL_SERVER_USER-0, -1, … (never root, never the
# hub's user) with the Python of the serving environment, in the folder
# AXLE_MODEL_SERVER_DIR/slot-N of its user (group AXLE_MODEL_SERVER_GROUP - the hub's group,
# default the hub's own - mode 2750, so only the hub reaches its Unix socket and log).
AXLE_SERVING_DIR = Path(env.str("AXLE_SERVING_DIR", default=str(AXLE_HUB_DIR / "serving")))
AXLE_MODEL_SERVER_PYTHON = env.str("AXLE_MODEL_SERVER_PYTHON", default=str(AXLE_STACK_DIR / "venv" / "bin" / "python"))
AXLE_MODEL_SERVER_USER = env.str("AXLE_MODEL_SERVER_USER", default="axle-serve")
AXLE_MODEL_SERVER_DIR = Path(env.str("AXLE_MODEL_SERVER_DIR", default=str(AXLE_HOME / "serving")))
AXLE_MODEL_SERVER_GROUP = env.str("AXLE_MODEL_SERVER_GROUP", default="")
AXLE_MODEL_SERVER_POOL = env.int("AXLE_MODEL_SERVER_POOL", default=8)

AXLE_MLFLOW_TRACKING_URI = env.str("AXLE_MLFLOW_TRACKING_URI", default="http://127.0.0.1:5000")
# Where people open MLflow's UI (the job page links a run there); the tracking URI by default.
AXLE_MLFLOW_UI_URL = env.str("AXLE_MLFLOW_UI_URL", default="")
# The hub's login on an MLflow server that runs MLflow's basic-auth app (an admin: it makes a
# user per job). The password is a secret: AXLE_MLFLOW_PASSWORD or AXLE_MLFLOW_PASSWORD_FILE.
AXLE_MLFLOW_USERNAME = env.str("AXLE_MLFLOW_USERNAME", default="")
AXLE_MLFLOW_PASSWORD = secret("AXLE_MLFLOW_PASSWORD", default="")

EMAIL_BACKEND = env.str("DJANGO_EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env.str("DJANGO_DEFAULT_FROM_EMAIL", default="axle@localhost")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("DJANGO_LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # One line per SSH connection and per queued task is noise at INFO.
        "paramiko": {"level": "WARNING"},
        # Every login attempt is in the audit trail already; axes' own lockout warnings stay.
        "axes": {"level": "WARNING"},
        "django-q": {"level": env.str("AXLE_QUEUE_LOG_LEVEL", default="WARNING")},
    },
}

"""XNET settings: one module, driven by environment variables.

Defaults let a fresh checkout run with nothing installed but Python (SQLite, a filesystem
Celery broker). Production sets DATABASE_URL, CELERY_BROKER_URL, SECRET_KEY, DEBUG=false and
ALLOWED_HOSTS; see README.md.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from xnet_site.env import env_bool, env_database, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("XNET_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", True)
_DEV_SECRET = "insecure-dev-key-only-for-local-runs-never-in-production"  # noqa: S105 - DEBUG only
SECRET_KEY = env_str("SECRET_KEY", _DEV_SECRET if DEBUG else "")
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is false")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "audit.admin_apps.AuditedAdminConfig",  # django.contrib.admin, every change audited
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI / Redoc assets served locally, no CDN
    "csp",  # Content-Security-Policy header (CONTENT_SECURITY_POLICY below)
    "axes",  # login lockout (see AXES_* below)
    "django_otp",
    "django_otp.plugins.otp_totp",  # authenticator apps
    "django_otp.plugins.otp_static",  # recovery codes
    "accounts",
    "diagnosis",
    "reviews",
    "fhir_api",  # FHIR R4 reads of signed reports (not "fhir": fhir.resources owns that name)
    "webhooks",  # signed event POSTs to department-registered URLs
    "audit",
    "modelops",  # local validation, promotion and drift alarms of model versions (issue 12)
    "health",  # heartbeats and /healthz
    "dicomnet",  # DICOM in (C-STORE SCP, STOW-RS) and out (SR, secondary capture, PDF) per department node
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # After WhiteNoise, so static files keep their long cache; every other response gets these.
    "xnet_site.security.SecurityHeadersMiddleware",  # Cache-Control: no-store, Permissions-Policy
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Before anything reads the body (CSRF's check reads the form): refuses oversized requests.
    "xnet_site.security.RequestBodyLimitMiddleware",
    "accounts.middleware.AccountSecurityMiddleware",  # second factor gate, idle session timeout
    "django.contrib.messages.middleware.MessageMiddleware",
    "xnet_site.errors.FriendlyNotFoundMiddleware",  # our 404 page, not Django's URL list, with DEBUG on
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "audit.middleware.AuditMiddleware",  # after authentication: records views by URL name
    "diagnosis.middleware.DiskFullMiddleware",  # a full disk answers 507 with a reason, not a 500
    "axes.middleware.AxesMiddleware",  # last: turns a lockout into its page (429)
]

ROOT_URLCONF = "xnet_site.urls"
WSGI_APPLICATION = "xnet_site.wsgi.application"

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
            ],
        },
    },
]

DATABASES = {"default": env_database("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
DATABASES["default"]["CONN_MAX_AGE"] = env_int("DB_CONN_MAX_AGE", 0, minimum=0)
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # The embedded setup runs web server, worker and beat on one SQLite file: wait on locks
    # instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)

AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "worklist"
LOGOUT_REDIRECT_URL = "login"
# axes checks lockouts before the model backend checks the password.
# accounts.backends: Django's ModelBackend, except that service accounts never sign in.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "accounts.backends.PersonBackend"]

# Login lockout (django-axes), on /accounts/login/ and /admin/login/: XNET_LOGIN_FAILURE_LIMIT
# wrong passwords lock the account (from anywhere) and, separately, the address (for any account)
# for XNET_LOGIN_LOCKOUT_MINUTES; a department admin can unlock a user sooner. The address is
# audit.services.client_ip (X-Forwarded-For only from XNET_TRUSTED_PROXIES): behind an untrusted
# proxy every user shares one address, so set XNET_TRUSTED_PROXIES or XNET_LOGIN_LOCKOUT_BY_ADDRESS.
AXES_FAILURE_LIMIT = env_int("XNET_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("XNET_LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["username"]
if env_bool("XNET_LOGIN_LOCKOUT_BY_ADDRESS", True):
    AXES_LOCKOUT_PARAMETERS.append("ip_address")
AXES_CLIENT_IP_CALLABLE = "audit.services.client_ip"
AXES_RESET_ON_SUCCESS = True
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False  # attempts while locked do not extend it
AXES_LOCKOUT_TEMPLATE = "accounts/locked_out.html"
AXES_VERBOSE = False
AXES_DISABLE_ACCESS_LOG = True  # logins are in the audit trail already

# Two-factor authentication (django-otp): see accounts/middleware.py for who must use it.
OTP_TOTP_ISSUER = env_str("XNET_OTP_ISSUER", "XNET")

# Sessions end after XNET_SESSION_IDLE_MINUTES without a request, and when the browser closes.
SESSION_COOKIE_AGE = env_int("XNET_SESSION_IDLE_MINUTES", 30, minimum=1) * 60
SESSION_EXPIRE_AT_BROWSER_CLOSE = True

# API tokens (accounts.models.ApiToken): lifetime of a new token, and its longest allowed.
XNET_API_TOKEN_DAYS = env_int("XNET_API_TOKEN_DAYS", 90, minimum=1)
XNET_API_TOKEN_MAX_DAYS = env_int("XNET_API_TOKEN_MAX_DAYS", 365, minimum=1)
# Wrong API tokens from one address: past this many within the window, 429 until it ends.
XNET_API_TOKEN_FAILURE_LIMIT = env_int("XNET_API_TOKEN_FAILURE_LIMIT", 50, minimum=1)
XNET_API_TOKEN_FAILURE_WINDOW = env_int("XNET_API_TOKEN_FAILURE_WINDOW", 900, minimum=1)

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Uploaded images are patient data: they live outside any public URL and are streamed by an
# authenticated view that checks department access (diagnosis.views.image_file).
MEDIA_ROOT = Path(env_str("XNET_MEDIA_ROOT", str(VAR_DIR / "media")))
STORAGES = {
    # FileSystemStorage that removes what it wrote when a write fails (a full disk left empty files).
    "default": {"BACKEND": "diagnosis.storage.CleanFileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Upload limits.
XNET_MAX_UPLOAD_BYTES = env_int("XNET_MAX_UPLOAD_BYTES", 50 * 1024 * 1024, minimum=1)
XNET_MAX_IMAGE_PIXELS = env_int("XNET_MAX_IMAGE_PIXELS", 60_000_000, minimum=1)
XNET_MIN_IMAGE_SIDE = env_int("XNET_MIN_IMAGE_SIDE", 64, minimum=1)
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
# Request bodies (xnet_site.security.RequestBodyLimitMiddleware): a Content-Length above
# DATA_UPLOAD_MAX_MEMORY_SIZE is refused with a 413 before a byte of the body is read, except on
# the upload addresses, which take up to XNET_MAX_UPLOAD_REQUEST_BYTES (several images in one
# form) from a signed-in user on the pages, or from an API client (the API refuses a request
# without credentials before reading its body). The proxy in front refuses the same (README).
XNET_MAX_UPLOAD_REQUEST_BYTES = env_int("XNET_MAX_UPLOAD_REQUEST_BYTES", 4 * XNET_MAX_UPLOAD_BYTES, minimum=1)
if XNET_MAX_UPLOAD_REQUEST_BYTES < XNET_MAX_UPLOAD_BYTES:
    raise ImproperlyConfigured("XNET_MAX_UPLOAD_REQUEST_BYTES must be at least XNET_MAX_UPLOAD_BYTES")
# Stored files are patient data: readable by the service account only (Django's default is 0644
# files in 0755 folders). Uploads, DICOM renderings and the worker's heatmaps all go through the
# default storage, which applies these.
FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700

# Triage: an unsigned case whose first image arrived more than this many minutes ago goes to the
# top of the worklist whatever its AI score, so no study waits unread behind urgent ones.
XNET_TRIAGE_MAX_WAIT_MINUTES = env_int("XNET_TRIAGE_MAX_WAIT_MINUTES", 240, minimum=1)

# Models: one folder per model (<name>/model.keras + model.json); see ml/registry.py.
XNET_MODEL_DIR = Path(env_str("XNET_MODEL_DIR", str(BASE_DIR / "ml" / "models")))

# Inference jobs. The hard limit kills a stuck task; the soft limit (0.9 x hard) lets it record
# the failure first. 120 s is four times the slowest job measured here: a fresh child's first
# batch on a loaded 2-core machine (TensorFlow import 15-17 s, model load, a batch of 16 at
# about 80 ms an image). A job still running after XNET_JOB_STALE_AFTER seconds belongs to a
# dead worker whatever the heartbeats say, so the sweeper re-queues it.
XNET_JOB_TIME_LIMIT = env_int("XNET_JOB_TIME_LIMIT", 120, minimum=5)
XNET_JOB_SOFT_TIME_LIMIT = int(XNET_JOB_TIME_LIMIT * 0.9)
XNET_JOB_STALE_AFTER = env_int("XNET_JOB_STALE_AFTER", XNET_JOB_TIME_LIMIT + 30, minimum=1)
if XNET_JOB_STALE_AFTER <= XNET_JOB_TIME_LIMIT:
    raise ImproperlyConfigured("XNET_JOB_STALE_AFTER must be above XNET_JOB_TIME_LIMIT")
# A pending job is published again when it was never published (broker down at upload) for
# XNET_JOB_UNQUEUED_GRACE seconds, or was published XNET_JOB_REQUEUE_PENDING_AFTER seconds ago
# (the message may be lost; a duplicate costs one no-op claim).
XNET_JOB_UNQUEUED_GRACE = env_int("XNET_JOB_UNQUEUED_GRACE", 10, minimum=1)
XNET_JOB_REQUEUE_PENDING_AFTER = env_int("XNET_JOB_REQUEUE_PENDING_AFTER", 45, minimum=1)
XNET_JOB_MAX_ATTEMPTS = env_int("XNET_JOB_MAX_ATTEMPTS", 3, minimum=1)
# Beat sends the sweeper every XNET_SWEEP_INTERVAL seconds; every worker also sweeps on start
# and with each heartbeat, so recovery does not depend on beat.
XNET_SWEEP_INTERVAL = env_int("XNET_SWEEP_INTERVAL", 10, minimum=1)
# Heartbeats (health app): a worker beats every XNET_HEARTBEAT_INTERVAL seconds; one silent for
# XNET_WORKER_LOST_AFTER seconds is dead and its running jobs are re-queued; beat silent for
# XNET_BEAT_SILENT_AFTER seconds is reported on /healthz and the dashboard.
XNET_HEARTBEAT_INTERVAL = env_int("XNET_HEARTBEAT_INTERVAL", 10, minimum=1)
XNET_WORKER_LOST_AFTER = env_int("XNET_WORKER_LOST_AFTER", 3 * XNET_HEARTBEAT_INTERVAL, minimum=1)
if XNET_WORKER_LOST_AFTER <= XNET_HEARTBEAT_INTERVAL:
    raise ImproperlyConfigured("XNET_WORKER_LOST_AFTER must be above XNET_HEARTBEAT_INTERVAL")
XNET_BEAT_SILENT_AFTER = env_int("XNET_BEAT_SILENT_AFTER", 3 * XNET_SWEEP_INTERVAL, minimum=1)
# /healthz fails below this much free space where uploads are stored, and gives the broker this
# many seconds to answer.
XNET_MIN_FREE_DISK_MB = env_int("XNET_MIN_FREE_DISK_MB", 1024, minimum=0)
XNET_HEALTH_BROKER_TIMEOUT = env_int("XNET_HEALTH_BROKER_TIMEOUT", 3, minimum=1)
# Worker batching: a worker takes up to XNET_BATCH_MAX_SIZE pending jobs of one modality into a
# single model call, waiting at most XNET_BATCH_WAIT_MS for more when it has only one.
XNET_BATCH_MAX_SIZE = env_int("XNET_BATCH_MAX_SIZE", 16, minimum=1)
XNET_BATCH_WAIT_MS = env_int("XNET_BATCH_WAIT_MS", 0, minimum=0)

# Audit trail. X-Forwarded-For is believed only from these proxy addresses (REMOTE_ADDR
# otherwise); API token use is recorded at most once per token per interval (seconds, 0: always).
XNET_TRUSTED_PROXIES = env_list("XNET_TRUSTED_PROXIES", [])
XNET_AUDIT_TOKEN_USE_INTERVAL = env_int("XNET_AUDIT_TOKEN_USE_INTERVAL", 300, minimum=0)

# Celery. The default broker needs no server: kombu's filesystem transport in var/broker.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {
    # Above the hard time limit, or Redis re-delivers a task that is still running.
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", XNET_JOB_TIME_LIMIT * 2, minimum=1),
}
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS.update(
        data_folder_in=str(_broker_dir / "queue"),
        data_folder_out=str(_broker_dir / "queue"),
        processed_folder=str(_broker_dir / "processed"),
        control_folder=str(_broker_dir / "control"),  # kombu's default is ./control in the cwd
        store_processed=False,
    )
    # kombu does not create these folders, and a worker polling a missing one crashes.
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
if CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] <= XNET_JOB_TIME_LIMIT:
    raise ImproperlyConfigured("CELERY_VISIBILITY_TIMEOUT must be above XNET_JOB_TIME_LIMIT")
# One queue per modality, so a GPU worker can subscribe to the models it serves; `maintenance`
# carries the periodic sweeper.
CELERY_TASK_QUEUES = [Queue("xray"), Queue("ct"), Queue("maintenance"), Queue("dicom")]  # dicom: results out
CELERY_TASK_DEFAULT_QUEUE = "maintenance"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_TIME_LIMIT = XNET_JOB_TIME_LIMIT
CELERY_TASK_SOFT_TIME_LIMIT = XNET_JOB_SOFT_TIME_LIMIT
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_MAX_TASKS_PER_CHILD = env_int("CELERY_WORKER_MAX_TASKS_PER_CHILD", 200, minimum=1)
# Worker processes: by default one per core (the ONNX Runtime engine takes about 140 MB a process).
# `celery worker -c N` on the command line wins. Each pool child loads every installed model when it
# starts (diagnosis.tasks), before it takes a job, so a child may take this long to report ready.
CELERY_WORKER_CONCURRENCY = env_int("XNET_WORKER_CONCURRENCY", os.cpu_count() or 1, minimum=1)
CELERY_WORKER_PROC_ALIVE_TIMEOUT = float(env_int("XNET_WORKER_START_TIMEOUT", 120, minimum=4))
# Give up publishing quickly when the broker is down: the job row stays pending and the
# sweeper queues it again, so an upload request never hangs on the broker.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5}
CELERY_BROKER_CONNECTION_TIMEOUT = 3
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE = {
    "sweep-stalled-jobs": {
        "task": "diagnosis.tasks.sweep_stalled_jobs",
        "schedule": float(XNET_SWEEP_INTERVAL),
        "options": {"queue": "maintenance", "expires": float(XNET_SWEEP_INTERVAL)},
    },
    # DICOM deliveries whose message was lost (broker down, worker killed mid-send): published again.
    "requeue-dicom-deliveries": {
        "task": "dicomnet.tasks.requeue_deliveries",
        "schedule": 60.0,
        "options": {"queue": "dicom", "expires": 60.0},
    },
    # Drift alarms (modelops): each day, the last complete weeks of every active model version.
    "check-model-drift": {
        "task": "modelops.tasks.check_drift",
        "schedule": 24 * 3600.0,
        "options": {"queue": "maintenance", "expires": 12 * 3600.0},
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# DICOM network (dicomnet): the C-STORE listener (manage.py run_dicom_listener) answers as
# XNET_DICOM_AE_TITLE on XNET_DICOM_HOST:XNET_DICOM_PORT (loopback by default: a hospital opens it
# deliberately). Results go out from the "dicom" queue; a failed send is retried
# XNET_DICOM_DELIVERY_ATTEMPTS times, waiting XNET_DICOM_RETRY_SECONDS x 2^(attempt-1), at most
# XNET_DICOM_RETRY_MAX_SECONDS. XNET_DICOM_TIMEOUT bounds each association and message (seconds).
XNET_DICOM_AE_TITLE = env_str("XNET_DICOM_AE_TITLE", "XNET")
XNET_DICOM_HOST = env_str("XNET_DICOM_HOST", "127.0.0.1")
XNET_DICOM_PORT = env_int("XNET_DICOM_PORT", 11112, minimum=1)
XNET_DICOM_DELIVERY_ATTEMPTS = env_int("XNET_DICOM_DELIVERY_ATTEMPTS", 8, minimum=1)
XNET_DICOM_RETRY_SECONDS = env_int("XNET_DICOM_RETRY_SECONDS", 10, minimum=1)
XNET_DICOM_RETRY_MAX_SECONDS = env_int("XNET_DICOM_RETRY_MAX_SECONDS", 600, minimum=1)
XNET_DICOM_TIMEOUT = env_int("XNET_DICOM_TIMEOUT", 30, minimum=1)

# Webhooks (webhooks app): deliveries go out on XNET_WEBHOOK_QUEUE; each attempt waits at most
# XNET_WEBHOOK_TIMEOUT seconds per connect/read; a failed one is retried after
# XNET_WEBHOOK_RETRY_SECONDS x 2^(attempts-1) (at most XNET_WEBHOOK_RETRY_MAX_SECONDS), up to
# XNET_WEBHOOK_MAX_ATTEMPTS attempts; beat re-queues a delivery overdue by
# XNET_WEBHOOK_REPUBLISH_AFTER seconds (its message was lost). Targets must be https and public;
# XNET_WEBHOOK_ALLOW_LOOPBACK (on with DEBUG, for development and tests only) also allows
# loopback addresses over http (see webhooks/security.py).
XNET_WEBHOOK_QUEUE = env_str("XNET_WEBHOOK_QUEUE", "maintenance")
XNET_WEBHOOK_TIMEOUT = env_int("XNET_WEBHOOK_TIMEOUT", 10, minimum=1)
XNET_WEBHOOK_RETRY_SECONDS = env_int("XNET_WEBHOOK_RETRY_SECONDS", 30, minimum=1)
XNET_WEBHOOK_RETRY_MAX_SECONDS = env_int("XNET_WEBHOOK_RETRY_MAX_SECONDS", 3600, minimum=1)
XNET_WEBHOOK_MAX_ATTEMPTS = env_int("XNET_WEBHOOK_MAX_ATTEMPTS", 10, minimum=1)
XNET_WEBHOOK_REPUBLISH_AFTER = env_int("XNET_WEBHOOK_REPUBLISH_AFTER", 120, minimum=1)
XNET_WEBHOOK_ALLOW_LOOPBACK = env_bool("XNET_WEBHOOK_ALLOW_LOOPBACK", DEBUG)
CELERY_BEAT_SCHEDULE["sweep-webhook-deliveries"] = {
    "task": "webhooks.tasks.sweep_webhook_deliveries",
    "schedule": 60.0,
    "options": {"queue": XNET_WEBHOOK_QUEUE, "expires": 60.0},
}

# Admin/ops.
ADMINS = [("XNET admins", a) for a in env_list("XNET_ADMIN_EMAILS", [])]
# E-mail (drift alarms to department admins): printed to the console unless a backend is set,
# e.g. XNET_EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend with EMAIL_HOST/EMAIL_PORT.
EMAIL_BACKEND = env_str("XNET_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
DEFAULT_FROM_EMAIL = env_str("XNET_FROM_EMAIL", "xnet@localhost")

# Model operations (modelops). A silent version is promoted to assistive only with at least
# XNET_PROMOTION_MIN_SIGNED_PER_CLASS signed cases in each class here (a site admin may override).
# Drift: each of the last XNET_DRIFT_LOOKBACK_WEEKS complete weeks is compared with the model's
# test-split figures; a statistic is judged from XNET_DRIFT_MIN_WEEKLY_N observations, at level
# XNET_DRIFT_ALPHA each (exact binomial bands; README "Local validation and drift").
XNET_PROMOTION_MIN_SIGNED_PER_CLASS = env_int("XNET_PROMOTION_MIN_SIGNED_PER_CLASS", 20, minimum=1)
XNET_DRIFT_LOOKBACK_WEEKS = env_int("XNET_DRIFT_LOOKBACK_WEEKS", 4, minimum=1)
XNET_DRIFT_MIN_WEEKLY_N = env_int("XNET_DRIFT_MIN_WEEKLY_N", 20, minimum=1)
try:
    XNET_DRIFT_ALPHA = float(env_str("XNET_DRIFT_ALPHA", "0.001"))
except ValueError as exc:
    raise ImproperlyConfigured("XNET_DRIFT_ALPHA must be a number, e.g. 0.001") from exc
if not 0 < XNET_DRIFT_ALPHA < 1:
    raise ImproperlyConfigured("XNET_DRIFT_ALPHA must be between 0 and 1")

# Security: strict when DEBUG is off (checked by `manage.py check --deploy`).
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
# Content-Security-Policy (django-csp): scripts, styles, images and requests only from this
# server, no inline script. Inline style attributes are allowed: the probability bars and the
# heatmap's opacity are set per element (style-src-attr), and no script can be injected by them.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],  # data: for Swagger UI's icons
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
# Permissions-Policy (xnet_site.security): no page needs a camera, a microphone or a location.
XNET_PERMISSIONS_POLICY = (
    "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), payment=(), usb=()"
)
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    if not SECURE_HSTS_PRELOAD:
        # Preloading binds every subdomain of the hospital's domain to HTTPS in browsers, and is
        # hard to undo: the operator opts in, so its reminder (W021) stays quiet until then.
        SILENCED_SYSTEM_CHECKS = ["security.W021"]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "audit.authentication.AuditedTokenAuthentication",  # hashed, expiring accounts.ApiToken + audit
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["diagnosis.api.permissions.IsDepartmentMember"],
    "DEFAULT_PAGINATION_CLASS": "diagnosis.api.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "diagnosis.api.errors.exception_handler",
    # Bodies are JSON (the upload views take multipart/form-data themselves): a form encoding
    # cannot say null, so `birth_date=` was read as null where the schema promised a date.
    "DEFAULT_PARSER_CLASSES": ["diagnosis.api.parsers.JSONParser"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "XNET API",
    "DESCRIPTION": "Chest X-ray and CT classification: patients, cases, uploads, jobs, predictions.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Fields named "status" with different choice sets (jobs, model statuses): each its own name.
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "diagnosis.models.InferenceJob.Status",
        "ModelStatusEnum": "diagnosis.models.ModelDeployment.Status",
    },
}

# One console line per record: the "django" logger gets no console handler of its own (Django's
# default one printed every record twice with DEBUG on) and keeps the e-mails to ADMINS. Expected
# 4xx (a 403, a 404) log one line without a traceback; a 500 keeps it (xnet_site/log_filters.py).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "require_debug_false": {"()": "django.utils.log.RequireDebugFalse"},
        "quiet_client_errors": {"()": "xnet_site.log_filters.QuietClientErrors"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler"},
        "mail_admins": {
            "level": "ERROR",
            "filters": ["require_debug_false"],
            "class": "django.utils.log.AdminEmailHandler",
        },
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django": {"handlers": ["mail_admins"], "level": "INFO"},
        "django.request": {"filters": ["quiet_client_errors"]},
    },
}

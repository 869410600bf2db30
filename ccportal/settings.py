"""ccportal settings: one file, every value from the environment (django-environ).

Profiles (``DJANGO_ENV``):

* ``development`` (default): secrets are generated once into ``var/``; the
  portal talks to the local Constant Contact sandbox unless ``CC_MODE=live``.
* ``production``: ``SECRET_KEY``, ``FIELD_ENCRYPTION_KEYS`` and ``ALLOWED_HOSTS``
  are required; HTTPS-only cookies and HSTS; real Constant Contact endpoints.

Every variable is documented in ``.env.example`` and the README.
"""

from __future__ import annotations

from pathlib import Path

import environ

from ccportal.local_secrets import development_encryption_keys, development_secret_key
from integrations.constant_contact import endpoints as cc_live
from integrations.constant_contact.limits import TOKEN_REQUESTS_PER_SECOND

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DJANGO_ENV = env.str("DJANGO_ENV", default="development")
if DJANGO_ENV not in {"development", "production", "test"}:
    raise SystemExit(
        f"ccportal: DJANGO_ENV must be development, production or test, not {DJANGO_ENV!r}."
    )
PRODUCTION = DJANGO_ENV == "production"
VAR_DIR = Path(env.str("CCPORTAL_VAR_DIR", default=str(BASE_DIR / "var")))


# --- core -----------------------------------------------------------------------------------
def _production_requires(name: str, value, why: str):
    """``value`` of ``name``, or start-up stops with one line naming the variable (no
    traceback: a missing variable is the operator's to fix, not a bug)."""
    if isinstance(value, list):
        value = [item.strip() for item in value if item.strip()]
    else:
        value = value.strip()
    if not value:
        raise SystemExit(f"ccportal: {name} must be set when DJANGO_ENV=production ({why}).")
    return value


if PRODUCTION:
    SECRET_KEY = _production_requires(
        "SECRET_KEY",
        env.str("SECRET_KEY", default=""),
        "a long random string; it signs sessions and CSRF tokens",
    )
else:
    SECRET_KEY = env.str("SECRET_KEY", default="") or development_secret_key(VAR_DIR)

# Production runs with DEBUG off unless DEBUG is set explicitly (an empty value is unset).
DEBUG = env.bool("DEBUG") if env.str("DEBUG", default="") else not PRODUCTION
if PRODUCTION:
    ALLOWED_HOSTS = _production_requires(
        "ALLOWED_HOSTS",
        env.list("ALLOWED_HOSTS", default=[]),
        "the comma-separated host names the portal is served under",
    )
else:
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[]) or ["127.0.0.1", "localhost", "[::1]"]
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "django_tasks",
    "django_tasks_db",
    "integrations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files from the app processes themselves (gunicorn has no static handler), before
    # sessions and auth so a CSS request touches no database.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "integrations.middleware.ConfigurationErrorMiddleware",
]

ROOT_URLCONF = "ccportal.urls"
WSGI_APPLICATION = "ccportal.wsgi.application"
ASGI_APPLICATION = "ccportal.asgi.application"

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
                "integrations.context_processors.portal",
            ],
        },
    },
]

# --- data -----------------------------------------------------------------------------------
DATABASES = {
    "default": environ.Env.db_url_config(
        env.str("DATABASE_URL", default="") or f"sqlite:///{VAR_DIR / 'ccportal.sqlite3'}"
    )
}


def _tune_sqlite(database: dict) -> None:
    """WAL lets readers run beside the one writer; IMMEDIATE takes the write lock at BEGIN so
    two writers queue on the busy timeout instead of failing with "database is locked"."""
    if database["ENGINE"] != "django.db.backends.sqlite3":
        return
    options = database.setdefault("OPTIONS", {})
    options.setdefault("transaction_mode", "IMMEDIATE")
    options.setdefault("timeout", 30)
    options.setdefault(
        "init_command",
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;",
    )
    if database["NAME"] not in ("", ":memory:"):
        Path(database["NAME"]).parent.mkdir(parents=True, exist_ok=True)


_tune_sqlite(DATABASES["default"])
DATABASES["default"].setdefault("CONN_MAX_AGE", 0 if DEBUG else 60)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
# The database cache: the cache itself without Redis, and the stand-in while Redis does not
# answer (its table is made by migration 0008, so `migrate` is the only step a deploy needs).
_DATABASE_CACHE = {
    "BACKEND": "django.core.cache.backends.db.DatabaseCache",
    "LOCATION": "ccportal_cache",
}
if REDIS_URL:
    # Login limits, Connect limits and the lists cache keep working on the database while
    # Redis is down (ccportal.cache.FailoverCache); the banner says so.
    CACHES = {
        "default": {
            "BACKEND": "ccportal.cache.FailoverCache",
            "OPTIONS": {"PRIMARY": "redis", "FALLBACK": "database"},
        },
        "redis": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_connect_timeout": 1.0, "socket_timeout": 1.0},
        },
        "database": _DATABASE_CACHE,
    }
else:
    # Shared by every process on the host (django-ratelimit needs a shared cache).
    CACHES = {"default": _DATABASE_CACHE}

TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

# --- auth, sessions, security ----------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "integrations:dashboard"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# The proxy refuses plain HTTP instead of redirecting (integrations/views/proxy.py): a client
# that follows a redirect sends its token in clear on every call.
SECURE_REDIRECT_EXEMPT = [r"^proxy/"]
if PRODUCTION:
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# django-ratelimit guards login, connect and callback; behind a proxy set RATELIMIT_IP_META_KEY.
RATELIMIT_IP_META_KEY = env.str("RATELIMIT_IP_META_KEY", default="REMOTE_ADDR")

# --- i18n, static -----------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default="") or BASE_DIR / "staticfiles")
STATICFILES_DIRS = [BASE_DIR / "static"]
# Production serves what `collectstatic` put in STATIC_ROOT (`serve_portal --production` runs
# it), with gzip copies made once. Not the manifest storage: ccportal/urls.py resolves a static
# URL at import, so every command (migrate, check --deploy) would then need collectstatic first.
# Development and tests serve the source folders, looked up on each request: nothing to collect.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = not PRODUCTION
WHITENOISE_AUTOREFRESH = not PRODUCTION
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))

# --- field encryption -------------------------------------------------------------------------
# Comma-separated Fernet keys, newest first: new values are encrypted with the first, any key
# opens old ones. Rotate: put a new key first, run `manage.py rotate_encryption_keys`, then drop
# the old key.
if PRODUCTION:
    FIELD_ENCRYPTION_KEYS = _production_requires(
        "FIELD_ENCRYPTION_KEYS",
        env.list("FIELD_ENCRYPTION_KEYS", default=[]),
        "comma-separated Fernet keys, newest first; they encrypt tokens and client secrets",
    )
else:
    FIELD_ENCRYPTION_KEYS = env.list("FIELD_ENCRYPTION_KEYS", default=[]) or (
        development_encryption_keys(VAR_DIR)
    )

# --- Constant Contact -------------------------------------------------------------------------
# CC_MODE=sandbox points every endpoint at the local sandbox (`manage.py run_sandbox`);
# CC_MODE=live uses Constant Contact. An explicitly set CC_* URL always wins.
CC_MODE = env.str("CC_MODE", default="") or ("live" if PRODUCTION else "sandbox")
if CC_MODE not in {"sandbox", "live"}:
    raise SystemExit(f"ccportal: CC_MODE must be sandbox or live, not {CC_MODE!r}.")
CC_SANDBOX_URL = env.str("CC_SANDBOX_URL", default="http://127.0.0.1:8765").rstrip("/")

_CC_LIVE = {
    "CC_AUTHORIZE_URL": cc_live.AUTHORIZE_URL,
    "CC_TOKEN_URL": cc_live.TOKEN_URL,
    "CC_API_BASE_URL": cc_live.API_BASE_URL,
    "CC_JWKS_URL": cc_live.JWKS_URL,
    "CC_JWT_ISSUER": cc_live.JWT_ISSUER,
    "CC_JWT_AUDIENCE": cc_live.JWT_AUDIENCE,
}
# The sandbox serves CC's paths and signs with CC's issuer and audience, so validation is
# identical in both modes.
_CC_SANDBOX = {
    "CC_AUTHORIZE_URL": CC_SANDBOX_URL + cc_live.AUTHORIZE_PATH,
    "CC_TOKEN_URL": CC_SANDBOX_URL + cc_live.TOKEN_PATH,
    "CC_API_BASE_URL": CC_SANDBOX_URL + cc_live.API_PATH,
    "CC_JWKS_URL": CC_SANDBOX_URL + cc_live.JWKS_PATH,
    "CC_JWT_ISSUER": cc_live.JWT_ISSUER,
    "CC_JWT_AUDIENCE": cc_live.JWT_AUDIENCE,
}
for _name, _default in (_CC_SANDBOX if CC_MODE == "sandbox" else _CC_LIVE).items():
    globals()[_name] = env.str(_name, default=_default)

CC_EXTRA_SCOPES = env.list("CC_EXTRA_SCOPES", default=[])
CC_API_CONNECT_TIMEOUT = env.float("CC_API_CONNECT_TIMEOUT", default=5.0)
CC_API_READ_TIMEOUT = env.float("CC_API_READ_TIMEOUT", default=30.0)
CC_QUOTA_STORE = env.str(
    "CC_QUOTA_STORE",
    default="integrations.services.quota_stores.RedisStore"
    if REDIS_URL
    else "integrations.services.quota_stores.DatabaseStore",
)

# Tuning (defaults suit Constant Contact; see .env.example). Read by integrations.conf.
CC_TOKEN_REFRESH_SKEW = env.int("CC_TOKEN_REFRESH_SKEW", default=300)
CC_TOKEN_LEASE_SECONDS = env.float("CC_TOKEN_LEASE_SECONDS", default=30.0)
CC_TOKEN_WAIT_SECONDS = env.float("CC_TOKEN_WAIT_SECONDS", default=120.0)
CC_TOKEN_KEEPALIVE_DAYS = env.int("CC_TOKEN_KEEPALIVE_DAYS", default=150)
CC_TOKEN_REQUESTS_PER_SECOND = env.float(
    "CC_TOKEN_REQUESTS_PER_SECOND", default=TOKEN_REQUESTS_PER_SECOND
)
CC_OAUTH_STATE_LIFETIME = env.int("CC_OAUTH_STATE_LIFETIME", default=600)
CC_QUOTA_MARGIN = env.float("CC_QUOTA_MARGIN", default=0.05)
CC_QUOTA_MARGIN_STEP = env.float("CC_QUOTA_MARGIN_STEP", default=0.05)
CC_QUOTA_MARGIN_MAX = env.float("CC_QUOTA_MARGIN_MAX", default=0.5)
CC_QUOTA_INTERACTIVE_RESERVE = env.float("CC_QUOTA_INTERACTIVE_RESERVE", default=0.05)
CC_QUOTA_BACKGROUND_HORIZON = env.float("CC_QUOTA_BACKGROUND_HORIZON", default=0.3)
CC_QUOTA_DAY_GUARD = env.float("CC_QUOTA_DAY_GUARD", default=5.0)
CC_QUOTA_REDIS_PREFIX = env.str("CC_QUOTA_REDIS_PREFIX", default="ccportal:quota:")
CC_QUOTA_STORE_TIMEOUT = env.float("CC_QUOTA_STORE_TIMEOUT", default=1.0)
CC_QUOTA_FAIR_SHARE = env.bool("CC_QUOTA_FAIR_SHARE", default=True)
CC_QUOTA_ACCOUNT_REFRESH = env.float("CC_QUOTA_ACCOUNT_REFRESH", default=5.0)
CC_BULK_FIRST_POLL_DELAY = env.float("CC_BULK_FIRST_POLL_DELAY", default=2.0)
CC_BULK_MAX_POLL_DELAY = env.float("CC_BULK_MAX_POLL_DELAY", default=30.0)
CC_BULK_LEASE_SECONDS = env.float("CC_BULK_LEASE_SECONDS", default=60.0)
# Empty: one and a half leases.
CC_BULK_STALLED_AFTER = env.float("CC_BULK_STALLED_AFTER", default=0.0)
CC_BULK_WATCHDOG_SECONDS = env.float("CC_BULK_WATCHDOG_SECONDS", default=15.0)
CC_BULK_RESUME_AFTER = env.float("CC_BULK_RESUME_AFTER", default=300.0)
CC_BULK_UPLOAD_MAX_BYTES = env.int("CC_BULK_UPLOAD_MAX_BYTES", default=64 * 1024 * 1024)
CC_BULK_FILES_DAYS = env.int("CC_BULK_FILES_DAYS", default=7)
CC_CALL_LOG_DAYS = env.int("CC_CALL_LOG_DAYS", default=30)
CC_METRICS_TOKEN = env.str("CC_METRICS_TOKEN", default="")
CC_SYNC_CONFIRM_REMOVAL_SHARE = env.float("CC_SYNC_CONFIRM_REMOVAL_SHARE", default=0.10)

# --- the proxy (/proxy/v3/...) -----------------------------------------------------------------
CC_PROXY_MAX_WAIT_INTERACTIVE = env.float("CC_PROXY_MAX_WAIT_INTERACTIVE", default=5.0)
CC_PROXY_MAX_WAIT_BACKGROUND = env.float("CC_PROXY_MAX_WAIT_BACKGROUND", default=60.0)
# CC's 4 MB import payloads, with room for multipart framing.
CC_PROXY_MAX_BODY_BYTES = env.int("CC_PROXY_MAX_BODY_BYTES", default=5 * 1024 * 1024)

# --- alerts and e-mail -------------------------------------------------------------------------
CC_ALERTS_EVALUATE_SECONDS = env.float("CC_ALERTS_EVALUATE_SECONDS", default=30.0)
CC_ALERTS_WEBHOOK_CONNECT_TIMEOUT = env.float("CC_ALERTS_WEBHOOK_CONNECT_TIMEOUT", default=3.0)
CC_ALERTS_WEBHOOK_READ_TIMEOUT = env.float("CC_ALERTS_WEBHOOK_READ_TIMEOUT", default=5.0)
CC_ALERTS_GIVE_UP_HOURS = env.float("CC_ALERTS_GIVE_UP_HOURS", default=24.0)
CC_ALERTS_EMAIL_FROM = env.str("CC_ALERTS_EMAIL_FROM", default="")
# Development prints e-mails on the console; production sends them over SMTP.
EMAIL_BACKEND = env.str(
    "EMAIL_BACKEND",
    default="django.core.mail.backends.smtp.EmailBackend"
    if PRODUCTION
    else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="ccportal@localhost")

# --- logging ----------------------------------------------------------------------------------
# Debug pages and error e-mails hide the OAuth callback's code and state.
DEFAULT_EXCEPTION_REPORTER = "integrations.debug.SecretSafeExceptionReporter"
DEFAULT_EXCEPTION_REPORTER_FILTER = "integrations.debug.SecretSafeExceptionReporterFilter"
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "filters": {
        # No OAuth code, state, verifier, token or URL password reaches a log line.
        "secrets": {"()": "ccportal.logging.SecretScrubber"},
        # Task start/finish lines every 15 s (the watchdog) would drown the console; failed
        # tasks are logged as errors and still show. LOG_LEVEL=DEBUG shows everything.
        # The proxy's 429s (a busy key, a spent budget) are answers, not events.
        "backpressure": {"()": "ccportal.logging.QuietBackpressure"},
        "task_chatter": {
            "()": "ccportal.logging.LoggerFloor",
            "floors": {}
            if LOG_LEVEL == "DEBUG"
            else {"django_tasks": "WARNING", "django_tasks_db": "WARNING"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["secrets", "task_chatter"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.server": {"level": "WARNING"},
        "django.request": {"filters": ["backpressure"]},
    },
}

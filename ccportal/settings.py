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
from django.core.exceptions import ImproperlyConfigured

from ccportal.local_secrets import development_encryption_keys, development_secret_key

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DJANGO_ENV = env.str("DJANGO_ENV", default="development")
if DJANGO_ENV not in {"development", "production", "test"}:
    raise ImproperlyConfigured(
        f"DJANGO_ENV must be development, production or test, not {DJANGO_ENV!r}."
    )
PRODUCTION = DJANGO_ENV == "production"
VAR_DIR = Path(env.str("CCPORTAL_VAR_DIR", default=str(BASE_DIR / "var")))

# --- core -----------------------------------------------------------------------------------
if PRODUCTION:
    SECRET_KEY = env.str("SECRET_KEY")
else:
    SECRET_KEY = env.str("SECRET_KEY", default="") or development_secret_key(VAR_DIR)

DEBUG = env.bool("DEBUG", default=not PRODUCTION)
ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS", default=[] if PRODUCTION else ["127.0.0.1", "localhost", "[::1]"]
)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "django_tasks",
    "django_tasks_db",
    "integrations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "integrations.middleware.ConfigurationErrorMiddleware",
]

if PRODUCTION:
    # Serves collected static files from the app processes (runserver does it in development).
    MIDDLEWARE.insert(1, "whitenoise.middleware.WhiteNoiseMiddleware")

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
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
        }
    }
else:
    # Shared by every process on the host (django-ratelimit needs a shared cache).
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "ccportal_cache",
        }
    }

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
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))

# --- field encryption -------------------------------------------------------------------------
# Comma-separated Fernet keys, newest first: new values are encrypted with the first, any key
# opens old ones. Rotate: put a new key first, run `manage.py rotate_encryption_keys`, then drop
# the old key.
if PRODUCTION:
    FIELD_ENCRYPTION_KEYS = env.list("FIELD_ENCRYPTION_KEYS")
else:
    FIELD_ENCRYPTION_KEYS = env.list("FIELD_ENCRYPTION_KEYS", default=[]) or (
        development_encryption_keys(VAR_DIR)
    )

# --- Constant Contact -------------------------------------------------------------------------
# CC_MODE=sandbox points every endpoint at the local sandbox (`manage.py run_sandbox`);
# CC_MODE=live uses Constant Contact. An explicitly set CC_* URL always wins.
CC_MODE = env.str("CC_MODE", default="live" if PRODUCTION else "sandbox")
if CC_MODE not in {"sandbox", "live"}:
    raise ImproperlyConfigured(f"CC_MODE must be sandbox or live, not {CC_MODE!r}.")
CC_SANDBOX_URL = env.str("CC_SANDBOX_URL", default="http://127.0.0.1:8765").rstrip("/")

_CC_LIVE = {
    "CC_AUTHORIZE_URL": "https://authz.constantcontact.com/oauth2/default/v1/authorize",
    "CC_TOKEN_URL": "https://authz.constantcontact.com/oauth2/default/v1/token",
    "CC_API_BASE_URL": "https://api.cc.email/v3",
    "CC_JWKS_URL": "https://identity.constantcontact.com/oauth2/aus1lm3ry9mF7x2Ja0h8/v1/keys",
    "CC_JWT_ISSUER": "https://identity.constantcontact.com/oauth2/aus1lm3ry9mF7x2Ja0h8",
    "CC_JWT_AUDIENCE": "https://api.cc.email/v3",
}
_CC_SANDBOX = {
    "CC_AUTHORIZE_URL": f"{CC_SANDBOX_URL}/oauth2/default/v1/authorize",
    "CC_TOKEN_URL": f"{CC_SANDBOX_URL}/oauth2/default/v1/token",
    "CC_API_BASE_URL": f"{CC_SANDBOX_URL}/v3",
    "CC_JWKS_URL": f"{CC_SANDBOX_URL}/oauth2/aus1lm3ry9mF7x2Ja0h8/v1/keys",
    # The sandbox signs with CC's issuer and audience so validation is identical in both modes.
    "CC_JWT_ISSUER": _CC_LIVE["CC_JWT_ISSUER"],
    "CC_JWT_AUDIENCE": _CC_LIVE["CC_JWT_AUDIENCE"],
}
for _name, _default in (_CC_SANDBOX if CC_MODE == "sandbox" else _CC_LIVE).items():
    globals()[_name] = env.str(_name, default=_default)

CC_EXTRA_SCOPES = env.list("CC_EXTRA_SCOPES", default=[])
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
CC_QUOTA_MARGIN = env.float("CC_QUOTA_MARGIN", default=0.05)
CC_QUOTA_INTERACTIVE_RESERVE = env.float("CC_QUOTA_INTERACTIVE_RESERVE", default=0.05)
CC_QUOTA_REDIS_PREFIX = env.str("CC_QUOTA_REDIS_PREFIX", default="ccportal:quota:")

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
        # Task start/finish lines every 15 s (the watchdog) would drown the console; failed
        # tasks are logged as errors and still show. LOG_LEVEL=DEBUG shows everything.
        "task_chatter": {
            "()": "ccportal.logging.LoggerFloor",
            "floors": {}
            if LOG_LEVEL == "DEBUG"
            else {"django_tasks": "WARNING", "django_tasks_db": "WARNING"},
        }
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["task_chatter"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.server": {"level": "WARNING"}},
}

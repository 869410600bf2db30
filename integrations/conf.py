"""Typed access to ccportal's settings: the one place the app reads ``django.conf.settings``.

``ccportal/settings.py`` reads each value from the environment with its default (each is
documented in ``.env.example``); this module hands them out typed, read at call time so a
test's ``settings`` override applies at once. Misconfiguration is reported by
``integrations.checks``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@dataclass(frozen=True)
class CCEndpoints:
    authorize_url: str
    token_url: str
    api_base_url: str
    jwks_url: str
    jwt_issuer: str
    jwt_audience: str


def django_env() -> str:
    """The settings profile: ``development``, ``production`` or ``test``."""
    return settings.DJANGO_ENV


def debug() -> bool:
    """``DEBUG``: Django's debug pages (on in development, off in production unless set)."""
    return bool(settings.DEBUG)


def cc_mode() -> str:
    """``sandbox`` (the local stand-in) or ``live`` (Constant Contact)."""
    return settings.CC_MODE


def cc_sandbox_url() -> str:
    return settings.CC_SANDBOX_URL


def cc_endpoints() -> CCEndpoints:
    return CCEndpoints(
        authorize_url=settings.CC_AUTHORIZE_URL,
        token_url=settings.CC_TOKEN_URL,
        api_base_url=settings.CC_API_BASE_URL.rstrip("/"),
        jwks_url=settings.CC_JWKS_URL,
        jwt_issuer=settings.CC_JWT_ISSUER,
        jwt_audience=settings.CC_JWT_AUDIENCE,
    )


def cc_scopes() -> list[str]:
    """Scopes asked for on connect: CC's ``contact_data``, ``account_read`` (the account
    summary that names the connection) and ``offline_access`` (needed for a refresh token),
    plus any ``CC_EXTRA_SCOPES``."""
    scopes = ["contact_data", "account_read", "offline_access"]
    scopes += [s for s in settings.CC_EXTRA_SCOPES if s not in scopes]
    return scopes


def field_encryption_keys() -> list[str]:
    return list(settings.FIELD_ENCRYPTION_KEYS)


def quota_store_path() -> str:
    return settings.CC_QUOTA_STORE


def redis_url() -> str:
    return settings.REDIS_URL


def media_root() -> Path:
    """``MEDIA_ROOT``: uploaded sync files and job working files; every host must see it."""
    return Path(settings.MEDIA_ROOT)


def api_timeouts() -> tuple[float, float]:
    """``CC_API_CONNECT_TIMEOUT``, ``CC_API_READ_TIMEOUT``: seconds a call to CC's API may
    take to connect, and to answer once connected."""
    return float(settings.CC_API_CONNECT_TIMEOUT), float(settings.CC_API_READ_TIMEOUT)


# --- token lifecycle --------------------------------------------------------------------------
def token_refresh_skew_seconds() -> int:
    """``CC_TOKEN_REFRESH_SKEW``: refresh a stored access token once it expires within this
    many seconds (plus a per-account spread of up to two minutes)."""
    return int(settings.CC_TOKEN_REFRESH_SKEW)


def token_lease_seconds() -> float:
    """``CC_TOKEN_LEASE_SECONDS``: how long a refresh lease lives before another process may
    take over (the holder extends it once it knows its token-endpoint slot)."""
    return float(settings.CC_TOKEN_LEASE_SECONDS)


def token_wait_seconds() -> float:
    """``CC_TOKEN_WAIT_SECONDS``: how long a caller waits for a sibling's refresh."""
    return float(settings.CC_TOKEN_WAIT_SECONDS)


def token_keepalive_idle_days() -> int:
    """``CC_TOKEN_KEEPALIVE_DAYS``: refresh tokens idle this long are exercised, before CC's
    180-day expiry."""
    return int(settings.CC_TOKEN_KEEPALIVE_DAYS)


def token_requests_per_second() -> float:
    """``CC_TOKEN_REQUESTS_PER_SECOND``: what CC's token endpoint takes per client_id (1)."""
    return float(settings.CC_TOKEN_REQUESTS_PER_SECOND)


def oauth_state_lifetime_seconds() -> int:
    """``CC_OAUTH_STATE_LIFETIME``: how long a started Connect may take to come back."""
    return int(settings.CC_OAUTH_STATE_LIFETIME)


# --- quota service (integrations.services.quota) ----------------------------------------------
def quota_margin() -> float:
    """``CC_QUOTA_MARGIN``: slots are spaced ``1/per_second * (1 + margin)``.

    A margin ``m`` tolerates ``m`` seconds of difference in send-to-arrival delay between a call
    and the one ``per_second`` slots later. 0.05 covers wake-up lateness (p99 < 1 ms measured with
    8 processes) plus the latency jitter of a warm keep-alive HTTPS connection; a key whose calls
    are throttled anyway has its own margin widened in the ledger at runtime.
    """
    return float(settings.CC_QUOTA_MARGIN)


def quota_margin_step() -> float:
    """``CC_QUOTA_MARGIN_STEP``: how much one unexpected 429 ``throttled`` widens a key's margin."""
    return float(settings.CC_QUOTA_MARGIN_STEP)


def quota_margin_max() -> float:
    """``CC_QUOTA_MARGIN_MAX``: the widest margin the runtime widening may reach."""
    return float(settings.CC_QUOTA_MARGIN_MAX)


def quota_interactive_reserve() -> float:
    """``CC_QUOTA_INTERACTIVE_RESERVE``: share of the daily budget background jobs cannot spend."""
    return float(settings.CC_QUOTA_INTERACTIVE_RESERVE)


def quota_background_horizon() -> float:
    """``CC_QUOTA_BACKGROUND_HORIZON``: how far ahead (seconds) a background call may book.

    An interactive call waits at most about this plus one slot spacing behind background
    traffic (0.3 + 0.2625 s on a standard key).
    """
    return float(settings.CC_QUOTA_BACKGROUND_HORIZON)


def quota_day_guard() -> float:
    """``CC_QUOTA_DAY_GUARD``: seconds either side of 00:00 UTC in which a call counts against
    both days, covering clock skew with CC and request latency across midnight."""
    return float(settings.CC_QUOTA_DAY_GUARD)


def quota_redis_prefix() -> str:
    """``CC_QUOTA_REDIS_PREFIX``: namespace of the Redis store's ledger keys."""
    return str(settings.CC_QUOTA_REDIS_PREFIX)


def quota_fair_share() -> bool:
    """``CC_QUOTA_FAIR_SHARE``: background calls, and interactive calls with a bound on their
    wait (the proxy's), share each key between its accounts by weight and between each
    account's portal tokens (else first come, first served)."""
    return bool(settings.CC_QUOTA_FAIR_SHARE)


def quota_account_refresh() -> float:
    """``CC_QUOTA_ACCOUNT_REFRESH``: seconds a process keeps an account's weight and cap before
    reading them again (how soon a change takes effect everywhere)."""
    return float(settings.CC_QUOTA_ACCOUNT_REFRESH)


def quota_store_timeout() -> float:
    """``CC_QUOTA_STORE_TIMEOUT``: seconds to wait for the Redis store before failing closed."""
    return float(settings.CC_QUOTA_STORE_TIMEOUT)


# --- bulk list sync (integrations.services.bulk_*) --------------------------------------------
def bulk_first_poll_delay() -> float:
    """``CC_BULK_FIRST_POLL_DELAY``: seconds before an activity's first status poll; each later
    poll waits longer, up to :func:`bulk_max_poll_delay`."""
    return float(settings.CC_BULK_FIRST_POLL_DELAY)


def bulk_max_poll_delay() -> float:
    """``CC_BULK_MAX_POLL_DELAY``: the longest wait between two status polls."""
    return float(settings.CC_BULK_MAX_POLL_DELAY)


def bulk_lease_seconds() -> float:
    """``CC_BULK_LEASE_SECONDS``: how long a worker's claim on a job lives without a heartbeat;
    after it, the watchdog hands the job to another worker."""
    return float(settings.CC_BULK_LEASE_SECONDS)


def bulk_stalled_after_seconds() -> float:
    """``CC_BULK_STALLED_AFTER``: a moving job with no progress update for this long is shown
    as stalled (by default one and a half leases)."""
    configured = settings.CC_BULK_STALLED_AFTER
    return float(configured) if configured else 1.5 * bulk_lease_seconds()


def bulk_watchdog_every_seconds() -> float:
    """``CC_BULK_WATCHDOG_SECONDS``: how often the watchdog looks for jobs without a worker."""
    return float(settings.CC_BULK_WATCHDOG_SECONDS)


def bulk_resume_after_seconds() -> float:
    """``CC_BULK_RESUME_AFTER``: how long a job paused by repeated trouble (CC, the network,
    the quota store or the database failing) waits before it tries again by itself."""
    return float(settings.CC_BULK_RESUME_AFTER)


def sync_removal_confirm_share() -> float:
    """``CC_SYNC_CONFIRM_REMOVAL_SHARE``: a replace that would remove more than this share of
    the list's members runs only once a person confirms the removals."""
    return float(settings.CC_SYNC_CONFIRM_REMOVAL_SHARE)


def bulk_upload_max_bytes() -> int:
    """``CC_BULK_UPLOAD_MAX_BYTES``: the largest desired-membership file accepted."""
    return int(settings.CC_BULK_UPLOAD_MAX_BYTES)


def bulk_files_days() -> int:
    """``CC_BULK_FILES_DAYS``: days a finished job's files are kept after it ends."""
    return _positive_int("CC_BULK_FILES_DAYS")


def call_log_days() -> int:
    """``CC_CALL_LOG_DAYS``: days each call stays in the call log (rollups stay 400 days)."""
    return _positive_int("CC_CALL_LOG_DAYS")


def proxy_max_wait(lane: str) -> float:
    """``CC_PROXY_MAX_WAIT_INTERACTIVE`` / ``CC_PROXY_MAX_WAIT_BACKGROUND``: the longest a
    proxied call of ``lane`` waits for its send slot before it is answered 429."""
    name = (
        "CC_PROXY_MAX_WAIT_BACKGROUND" if lane == "background" else "CC_PROXY_MAX_WAIT_INTERACTIVE"
    )
    return max(0.0, float(getattr(settings, name)))


def proxy_max_body_bytes() -> int:
    """``CC_PROXY_MAX_BODY_BYTES``: the largest request body the proxy forwards (413 past it)."""
    return _positive_int("CC_PROXY_MAX_BODY_BYTES")


def _positive_int(name: str) -> int:
    value = int(getattr(settings, name))
    if value < 1:
        raise ImproperlyConfigured(f"{name} must be at least 1 (got {value}).")
    return value


def metrics_token() -> str:
    """``CC_METRICS_TOKEN``: the bearer token ``/metrics`` asks for; empty turns it off."""
    return settings.CC_METRICS_TOKEN


# --- alerts (integrations.services.alerts) ----------------------------------------------------
def alerts_evaluate_every_seconds() -> float:
    """``CC_ALERTS_EVALUATE_SECONDS``: how often the worker looks for alert conditions (quota
    thresholds and forecast, 429s, accounts, jobs) and hands due deliveries to a worker."""
    return float(settings.CC_ALERTS_EVALUATE_SECONDS)


def alerts_webhook_timeouts() -> tuple[float, float]:
    """``CC_ALERTS_WEBHOOK_CONNECT_TIMEOUT``, ``CC_ALERTS_WEBHOOK_READ_TIMEOUT``: seconds a
    webhook receiver may take to accept the connection, and to answer once connected."""
    return (
        float(settings.CC_ALERTS_WEBHOOK_CONNECT_TIMEOUT),
        float(settings.CC_ALERTS_WEBHOOK_READ_TIMEOUT),
    )


def alerts_give_up_hours() -> float:
    """``CC_ALERTS_GIVE_UP_HOURS``: how long after its event a failing delivery is retried
    (with backoff up to an hour) before it is marked as given up."""
    return float(settings.CC_ALERTS_GIVE_UP_HOURS)


def alerts_email_from() -> str:
    """``CC_ALERTS_EMAIL_FROM``: the sender of alert e-mails (empty: ``DEFAULT_FROM_EMAIL``)."""
    return settings.CC_ALERTS_EMAIL_FROM or settings.DEFAULT_FROM_EMAIL

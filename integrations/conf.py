"""Typed access to ccportal's settings: the one place the app reads ``django.conf.settings``.

Defaults work in the sandbox; misconfiguration is reported by ``integrations.checks``.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class CCEndpoints:
    authorize_url: str
    token_url: str
    api_base_url: str
    jwks_url: str
    jwt_issuer: str
    jwt_audience: str


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
    """Scopes asked for on connect: CC's ``contact_data`` and ``offline_access`` (needed for a
    refresh token) plus any ``CC_EXTRA_SCOPES``."""
    scopes = ["contact_data", "offline_access"]
    scopes += [s for s in getattr(settings, "CC_EXTRA_SCOPES", []) if s not in scopes]
    return scopes


def field_encryption_keys() -> list[str]:
    return list(settings.FIELD_ENCRYPTION_KEYS)


def quota_store_path() -> str:
    return settings.CC_QUOTA_STORE


def redis_url() -> str:
    return settings.REDIS_URL


# --- token lifecycle --------------------------------------------------------------------------
def token_refresh_skew_seconds() -> int:
    """Refresh a stored access token once it expires within this many seconds (plus a
    per-account spread of up to two minutes)."""
    return int(getattr(settings, "CC_TOKEN_REFRESH_SKEW", 300))


def token_lease_seconds() -> float:
    """How long a refresh lease lives before another process may take over (the holder
    extends it once it knows its token-endpoint slot)."""
    return float(getattr(settings, "CC_TOKEN_LEASE_SECONDS", 30))


def token_wait_seconds() -> float:
    """How long a caller waits for a sibling's refresh before giving up."""
    return float(getattr(settings, "CC_TOKEN_WAIT_SECONDS", 120))


def token_keepalive_idle_days() -> int:
    """Refresh tokens idle this long are exercised, before CC's 180-day expiry."""
    return int(getattr(settings, "CC_TOKEN_KEEPALIVE_DAYS", 150))


def oauth_state_lifetime_seconds() -> int:
    return int(getattr(settings, "CC_OAUTH_STATE_LIFETIME", 600))


# --- quota service (integrations.services.quota) ----------------------------------------------
# Each reads an optional setting; the defaults are what the quota service is tuned for.


def quota_margin() -> float:
    """``CC_QUOTA_MARGIN``: slots are spaced ``1/per_second * (1 + margin)``.

    A margin ``m`` tolerates ``m`` seconds of difference in send-to-arrival delay between a call
    and the one ``per_second`` slots later. 0.05 covers wake-up lateness (p99 < 1 ms measured with
    8 processes) plus the latency jitter of a warm keep-alive HTTPS connection; a key whose calls
    are throttled anyway has its own margin widened in the ledger at runtime.
    """
    return float(getattr(settings, "CC_QUOTA_MARGIN", 0.05))


def quota_margin_step() -> float:
    """``CC_QUOTA_MARGIN_STEP``: how much one unexpected 429 ``throttled`` widens a key's margin."""
    return float(getattr(settings, "CC_QUOTA_MARGIN_STEP", 0.05))


def quota_margin_max() -> float:
    """``CC_QUOTA_MARGIN_MAX``: the widest margin the runtime widening may reach."""
    return float(getattr(settings, "CC_QUOTA_MARGIN_MAX", 0.5))


def quota_interactive_reserve() -> float:
    """``CC_QUOTA_INTERACTIVE_RESERVE``: share of the daily budget background jobs cannot spend."""
    return float(getattr(settings, "CC_QUOTA_INTERACTIVE_RESERVE", 0.05))


def quota_background_horizon() -> float:
    """``CC_QUOTA_BACKGROUND_HORIZON``: how far ahead (seconds) a background call may book.

    An interactive call waits at most about this plus one slot spacing behind background
    traffic (0.3 + 0.2625 s on a standard key).
    """
    return float(getattr(settings, "CC_QUOTA_BACKGROUND_HORIZON", 0.3))


def quota_day_guard() -> float:
    """``CC_QUOTA_DAY_GUARD``: seconds either side of 00:00 UTC in which a call counts against
    both days, covering clock skew with CC and request latency across midnight."""
    return float(getattr(settings, "CC_QUOTA_DAY_GUARD", 5.0))


def quota_redis_prefix() -> str:
    """``CC_QUOTA_REDIS_PREFIX``: namespace of the Redis store's ledger keys."""
    return str(getattr(settings, "CC_QUOTA_REDIS_PREFIX", "ccportal:quota:"))


def quota_store_timeout() -> float:
    """``CC_QUOTA_STORE_TIMEOUT``: seconds to wait for the Redis store before failing closed."""
    return float(getattr(settings, "CC_QUOTA_STORE_TIMEOUT", 1.0))

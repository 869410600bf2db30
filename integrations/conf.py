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

"""Errors that carry CC's status and body and print them readably — never a token."""

from __future__ import annotations

import datetime as dt
from http import HTTPStatus
from typing import Any, Final

#: CC's ``error_key`` for more calls in a second than the key allows (429).
THROTTLED: Final = "throttled"
#: CC's ``error_key`` for a key whose daily budget is spent until 00:00 UTC (429).
QUOTA_EXCEEDED: Final = "quota_exceeded"
#: CC's ``error_key`` for a missing, malformed or expired access token (401).
UNAUTHORIZED: Final = "unauthorized"
#: What the gateway records as ``error_key`` when no HTTP answer arrived.
NO_ANSWER_TIMEOUT: Final = "timeout"
NO_ANSWER_CONNECTION: Final = "connection_error"


class CCError(Exception):
    """Base for everything that went wrong talking to Constant Contact."""


class CCTransportError(CCError):
    """No HTTP response: connection refused or reset, DNS, TLS, or a timeout."""

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


class CCUnexpectedAnswer(CCError):
    """CC answered 2xx with a body that lacks what the endpoint documents."""


class CCHTTPError(CCError):
    """CC answered with an error status. ``body`` is CC's parsed error body (dict, list or
    text); ``error_key`` is CC's first ``error_key`` when it sent one."""

    def __init__(
        self, *, status: int, method: str, path: str, body: Any = None, error_key: str = ""
    ) -> None:
        self.status = int(status)
        self.method = method
        self.path = path
        self.body = body
        self.error_key = error_key or error_key_of(body)
        super().__init__(self._message())

    def _message(self) -> str:
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = ""
        detail = error_message_of(self.body)
        text = f"Constant Contact answered {self.status} {phrase} to {self.method} {self.path}"
        if self.error_key:
            text += f" [{self.error_key}]"
        if detail:
            text += f": {detail}"
        return text


class CCUnauthorized(CCHTTPError):
    """401: the access token was missing, malformed or expired."""


class CCForbidden(CCHTTPError):
    """403: the token lacks a scope, the user a privilege, or the app is deactivated."""


class CCNotFound(CCHTTPError):
    """404."""


class CCThrottled(CCHTTPError):
    """429 ``throttled``: more than the key's per-second limit arrived at CC."""


class CCQuotaExceeded(CCHTTPError):
    """429 ``quota_exceeded``: the key's daily budget is spent until 00:00 UTC."""

    def __init__(self, *, reset_at: dt.datetime | None = None, **kwargs: Any) -> None:
        self.reset_at = reset_at
        super().__init__(**kwargs)

    def _message(self) -> str:
        text = super()._message()
        if self.reset_at is not None:
            text += f" — the daily quota resets at {self.reset_at:%Y-%m-%d %H:%M} UTC"
        return text


class CCActivityQueueFull(CCHTTPError):
    """429 from the bulk-activity queue: 1,000 activities already queued for this account."""


class CCServerError(CCHTTPError):
    """5xx."""


class OAuthError(CCError):
    """The token endpoint refused: OAuth ``error`` / ``error_description`` (RFC 6749 §5.2)."""

    def __init__(self, *, status: int, error: str, description: str = "") -> None:
        self.status = int(status)
        self.error = error or "unknown_error"
        self.description = description
        text = f"CC's token endpoint answered {self.status}: {self.error}"
        if description:
            text += f" ({description})"
        super().__init__(text)

    @property
    def is_invalid_grant(self) -> bool:
        return self.error == "invalid_grant"

    @property
    def is_retryable(self) -> bool:
        return self.status == HTTPStatus.TOO_MANY_REQUESTS or self.status >= 500


def error_key_of(body: Any) -> str:
    """CC sends ``{"error_key": ...}`` for auth and limits, ``[{"error_key": ...}]`` otherwise."""
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]
    if isinstance(body, dict):
        return str(body.get("error_key") or body.get("error") or "")
    return ""


def error_message_of(body: Any) -> str:
    if isinstance(body, list):
        parts = [error_message_of(item) for item in body[:5]]
        return "; ".join(p for p in parts if p)
    if isinstance(body, dict):
        return str(body.get("error_message") or body.get("error_description") or "")
    if isinstance(body, str):
        return body.strip()[:300]
    return ""


def http_error_for(
    *, status: int, method: str, path: str, body: Any, reset_at: dt.datetime | None = None
) -> CCHTTPError:
    """The most specific error type for a CC error response."""
    key = error_key_of(body)
    kwargs = {"status": status, "method": method, "path": path, "body": body}
    if status == HTTPStatus.TOO_MANY_REQUESTS:
        if key == QUOTA_EXCEEDED:
            return CCQuotaExceeded(reset_at=reset_at, **kwargs)
        if key == THROTTLED:
            return CCThrottled(**kwargs)
        return CCActivityQueueFull(**kwargs)
    if status == HTTPStatus.UNAUTHORIZED:
        return CCUnauthorized(**kwargs)
    if status == HTTPStatus.FORBIDDEN:
        return CCForbidden(**kwargs)
    if status == HTTPStatus.NOT_FOUND:
        return CCNotFound(**kwargs)
    if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
        return CCServerError(**kwargs)
    return CCHTTPError(**kwargs)

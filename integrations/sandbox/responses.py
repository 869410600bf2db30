"""Responses and CC's error shapes (swagger ``APIErrorSchema``, ``AuthorizationErrorSchema``).

* Gateway errors (401, and every 429) are one object: ``{"error_key", "error_message"}``.
* Service errors (400, 403, 404, 405, 409, 415, 500, 503) are an array of such objects.
* OAuth errors are RFC 6749 objects: ``{"error", "error_description"}``.

Reference: https://developer.constantcontact.com/api_guide/glossary_responses.html
Reference: https://developer.constantcontact.com/api_guide/rate_limits.html
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from integrations.constant_contact.errors import QUOTA_EXCEEDED, THROTTLED, UNAUTHORIZED
from integrations.constant_contact.limits import QUEUED_ACTIVITIES_MAX

JSON = "application/json"
VALIDATION_KEY = "contacts.api.validation.error"
NOT_FOUND_KEY = "contacts.api.not_found"

QUEUED_ACTIVITIES_MESSAGE = (
    f"Too many requests. You exceeded {QUEUED_ACTIVITIES_MAX:,} queued activities for this "
    "user account."
)


@dataclass
class Reply:
    """A complete HTTP response; the body is always fully built (keep-alive needs a length)."""

    status: int
    body: bytes = b""
    content_type: str | None = JSON
    headers: list[tuple[str, str]] = field(default_factory=list)
    error_code: str | None = None  # the OAuth ``error`` of a token-endpoint reply, for stats

    def header_list(self) -> list[tuple[str, str]]:
        headers = list(self.headers)
        if self.content_type is not None:
            headers.append(("Content-Type", self.content_type))
        headers.append(("Content-Length", str(len(self.body))))
        return headers

    def status_line(self) -> str:
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Unknown"
        return f"{self.status} {phrase}"


def dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def json_reply(data: Any, status: int = HTTPStatus.OK, **kwargs: Any) -> Reply:
    return Reply(int(status), dumps(data), **kwargs)


def api_error(status: int, error_key: str, message: str) -> Reply:
    """CC's service error: an array with one ``{error_key, error_message}``."""
    return json_reply([{"error_key": error_key, "error_message": message}], status)


def gateway_error(status: int, error_key: str, message: str) -> Reply:
    """CC's gateway error: a single ``{error_key, error_message}`` object."""
    return json_reply({"error_key": error_key, "error_message": message}, status)


def validation_error(message: str) -> Reply:
    return api_error(HTTPStatus.BAD_REQUEST, VALIDATION_KEY, message)


def not_found(message: str) -> Reply:
    return api_error(HTTPStatus.NOT_FOUND, NOT_FOUND_KEY, message)


def unauthorized() -> Reply:
    return gateway_error(HTTPStatus.UNAUTHORIZED, UNAUTHORIZED, "Unauthorized")


def throttled() -> Reply:
    return gateway_error(HTTPStatus.TOO_MANY_REQUESTS, THROTTLED, "Too Many Requests")


def quota_exceeded() -> Reply:
    return gateway_error(HTTPStatus.TOO_MANY_REQUESTS, QUOTA_EXCEEDED, "Limit Exceeded")


def too_many_queued_activities() -> Reply:
    return gateway_error(
        HTTPStatus.TOO_MANY_REQUESTS, "too_many_requests", QUEUED_ACTIVITIES_MESSAGE
    )


def internal_error() -> Reply:
    return api_error(
        HTTPStatus.INTERNAL_SERVER_ERROR,
        "server_error",
        "There was a problem with our internal service.",
    )


def service_unavailable() -> Reply:
    return api_error(
        HTTPStatus.SERVICE_UNAVAILABLE,
        "service_unavailable",
        "Our internal service is temporarily unavailable.",
    )


def gateway_timeout() -> Reply:
    return gateway_error(HTTPStatus.GATEWAY_TIMEOUT, "gateway_timeout", "Gateway Timeout")


def oauth_error(status: int, error: str, description: str, **kwargs: Any) -> Reply:
    reply = json_reply({"error": error, "error_description": description}, status, **kwargs)
    reply.error_code = error
    reply.headers += [("Cache-Control", "no-store"), ("Pragma", "no-cache")]
    return reply


def control_error(status: int, message: str) -> Reply:
    """Errors of the sandbox's own control API: ``{"error": message}``."""
    return json_reply({"error": message}, status)

"""``/proxy/v3/<CC path>``: CC's v3 API for code in any language, behind a portal token.

The view reads the request, asks ``services.proxy`` to send it, and streams CC's answer back
with ``X-CC-Quota-Remaining`` and ``X-CC-Call-Id``. When ccportal itself refuses, the answer is
JSON shaped like CC's errors (``error_key``, ``error_message``), so existing CC client code
handles it: 401 bad token, 403 account outside the token, 409 account needs a reconnect, 413
body too large, 400 a path that leaves /v3 or a bad header, 403 plain HTTP where the portal
requires HTTPS (``SECURE_SSL_REDIRECT``), 429 with ``Retry-After`` when the
lane's budget or the account's cap is spent or the slot is further than the lane waits, 503
when the quota store does not answer, 502/504 when CC does not.
"""

from __future__ import annotations

import logging
import math
from http import HTTPStatus

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from integrations import conf
from integrations.constant_contact.errors import CCActivityQueueFull, CCTransportError
from integrations.crypto import DecryptionError
from integrations.errors import Unavailable
from integrations.services import proxy as proxy_service
from integrations.services.gateway import PathOutsideApi
from integrations.services.proxy_tokens import ProxyTokenRefused, proxy_token_authenticate
from integrations.services.quota import QuotaBusy, QuotaExhausted

logger = logging.getLogger(__name__)
security_logger = logging.getLogger("django.security.DisallowedHost")

#: Answers to refusals, by the error raised: status and CC-style ``error_key``.
REFUSALS: tuple[tuple[type[Exception], HTTPStatus, str], ...] = (
    (ProxyTokenRefused, HTTPStatus.UNAUTHORIZED, "unauthorized"),
    (proxy_service.AccountOutsideScope, HTTPStatus.FORBIDDEN, "forbidden"),
    (proxy_service.AccountNotChosen, HTTPStatus.BAD_REQUEST, "bad_request"),
    (proxy_service.LaneUnknown, HTTPStatus.BAD_REQUEST, "bad_request"),
    (PathOutsideApi, HTTPStatus.BAD_REQUEST, "bad_request"),
    (proxy_service.BodyTooLarge, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "payload_too_large"),
    (proxy_service.AccountNeedsReconnect, HTTPStatus.CONFLICT, "needs_reconnect"),
)


def _error(status: HTTPStatus, key: str, message: str, **headers: str) -> JsonResponse:
    response = JsonResponse({"error_key": key, "error_message": message}, status=status)
    response["Content-Length"] = str(len(response.content))
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def _body(request: HttpRequest) -> bytes:
    """The request body, refused past the limit before it is read whole."""
    limit = conf.proxy_max_body_bytes()
    declared = request.META.get("CONTENT_LENGTH") or "0"
    proxy_service.proxy_body_check(int(declared) if declared.isdigit() else 0)
    body = request.read(limit + 1)
    proxy_service.proxy_body_check(len(body))
    return body


def _backpressure(request: HttpRequest, key: str, message: str, *, retry_after: int):
    """429 from ccportal itself: come back in ``retry_after`` seconds. Marked on the request, so
    the log leaves it out (``ccportal.logging.QuietBackpressure``)."""
    request.proxy_backpressure = True
    return _error(HTTPStatus.TOO_MANY_REQUESTS, key, message, Retry_After=str(retry_after))


@csrf_exempt
def proxy(request: HttpRequest, path: str) -> HttpResponse:
    # The proxy's door runs no CommonMiddleware: the Host header is checked here, before
    # anything else is read, and logged where Django logs a bad one.
    try:
        request.get_host()
    except DisallowedHost as bad_host:
        security_logger.error(str(bad_host))
        return _error(HTTPStatus.BAD_REQUEST, "bad_request", "This host is not served here.")
    if settings.SECURE_SSL_REDIRECT and not request.is_secure():
        # Where pages redirect to HTTPS, the proxy refuses instead: a client that follows a
        # redirect sends its token in clear once for every call.
        return _error(
            HTTPStatus.FORBIDDEN,
            "https_required",
            "The proxy answers over HTTPS only: call it with https://. A token already sent "
            "over plain HTTP should be revoked.",
        )
    query = request.META.get("QUERY_STRING", "")
    cc_path = "/" + path + (f"?{query}" if query else "")
    try:
        answer = proxy_service.proxy_forward(
            caller=proxy_token_authenticate(request.headers.get("Authorization", "")),
            account_id=request.headers.get("X-CC-Account"),
            lane=request.headers.get("X-CC-Lane"),
            method=request.method or "GET",
            path=cc_path,
            body=_body(request),
            content_type=request.headers.get("Content-Type"),
            accept=request.headers.get("Accept"),
        )
    except QuotaBusy as busy:
        return _backpressure(request, "throttled", str(busy), retry_after=busy.retry_after)
    except QuotaExhausted as spent:
        return _backpressure(
            request, "quota_exceeded", str(spent), retry_after=max(1, math.ceil(spent.wait))
        )
    except CCActivityQueueFull as full:
        return _backpressure(request, "throttled", str(full), retry_after=60)
    except DecryptionError as unreadable:
        # What ConfigurationErrorMiddleware says on pages, as the proxy's JSON.
        logger.error("%s %s: %s", request.method, request.path, unreadable)
        return _error(HTTPStatus.INTERNAL_SERVER_ERROR, "tokens_unreadable", str(unreadable))
    except CCTransportError as lost:
        status = HTTPStatus.GATEWAY_TIMEOUT if lost.timeout else HTTPStatus.BAD_GATEWAY
        return _error(status, "unreachable", str(lost))
    except Unavailable as down:
        return _error(HTTPStatus.SERVICE_UNAVAILABLE, "unavailable", str(down), Retry_After="5")
    except proxy_service.AccountNeedsReconnect as stale:
        page = request.build_absolute_uri(
            reverse("integrations:account_detail", args=[stale.account.pk])
        )
        return _error(
            HTTPStatus.CONFLICT,
            "needs_reconnect",
            f"{stale} Reconnect it on its page: {page}",
        )
    except tuple(kind for kind, _, _ in REFUSALS) as refused:
        status, key = next((s, k) for kind, s, k in REFUSALS if isinstance(refused, kind))
        response = _error(status, key, str(refused))
        if status == HTTPStatus.UNAUTHORIZED:
            response["WWW-Authenticate"] = 'Bearer realm="ccportal proxy"'
        return response
    whole = isinstance(answer.body, bytes)
    response = (HttpResponse if whole else StreamingHttpResponse)(
        answer.body, status=answer.status, content_type=answer.content_type or None
    )
    if whole:
        response["Content-Length"] = str(len(answer.body))
    if not answer.content_type:
        del response["Content-Type"]
    for name, value in answer.headers.items():
        response[name] = value
    response["X-CC-Quota-Remaining"] = str(answer.quota_remaining)
    response["X-CC-Call-Id"] = str(answer.call_id)
    return response

"""The one way out to Constant Contact. ``grep cc_call`` finds every place ccportal talks to CC.

``cc_call`` books a slot and a unit of the key's daily budget (``quota``), takes a valid
access token (``tokens``), sends with connect/read timeouts, classifies the outcome and records
every attempt (``ApiCall`` + daily rollup):

* connection failures before the request left, and 5xx/timeouts on idempotent requests, are
  retried with full-jitter exponential backoff — each retry books a new slot;
* 429 ``throttled`` means our own accounting was wrong: the key is paused for every process
  for a second and its slot spacing widened, then the call is retried;
* 429 ``quota_exceeded`` stops the key until 00:00 UTC and raises :class:`CCQuotaExceeded`
  naming the reset (background jobs pause until then; interactive callers see the message);
* 429 from the bulk-activity queue (1,000 queued activities) backs off that account only;
* 401 forces one refresh through the token service, then one retry;
* any other 4xx raises a typed error carrying CC's error body (never a token).

Other code should use :func:`cc_client` for typed endpoints, or ``cc_call`` for the rest.
"""

from __future__ import annotations

import json as json_module
import logging
import random
import re
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import requests
from django.core.cache import cache
from urllib3.exceptions import NewConnectionError

from integrations import conf
from integrations.constant_contact.client import ConstantContact
from integrations.constant_contact.errors import (
    NO_ANSWER_CONNECTION,
    NO_ANSWER_TIMEOUT,
    THROTTLED,
    CCActivityQueueFull,
    CCError,
    CCHTTPError,
    CCQuotaExceeded,
    CCTransportError,
    http_error_for,
)
from integrations.constant_contact.http import shared_session
from integrations.constant_contact.limits import next_utc_midnight
from integrations.errors import PortalError
from integrations.models import ApiCall, ConnectedAccount, Lane
from integrations.services import quota
from integrations.services.audit import api_call_record
from integrations.services.tokens import access_token

logger = logging.getLogger(__name__)

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
MAX_ATTEMPTS = 4
BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0
ACTIVITY_QUEUE_BACKOFF = 60.0
_ID_SEGMENT = re.compile(
    r"^(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|\d+)$"
)


def path_template(path: str) -> str:
    """``/contacts/1b2c...?include=x`` → ``/contacts/{id}``: what the call ledger groups by."""
    bare = path.split("?", 1)[0]
    return "/".join("{id}" if _ID_SEGMENT.match(part) else part for part in bare.split("/"))


def _backoff(attempt: int) -> float:
    """Full jitter (AWS architecture blog): uniform in [0, min(cap, base * 2^attempt)]."""
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))


def _uses_activity_queue(method: str, path: str) -> bool:
    # CC's 1,000-queued-activities cap answers on POST /activities/* and the export download.
    return (method == "POST" and path.startswith("/activities")) or path.startswith(
        "/contact_exports"
    )


def _account_backoff_key(account: ConnectedAccount) -> str:
    return f"ccportal:activity-queue-backoff:{account.pk}"


def _parse(response: requests.Response) -> Any:
    if response.status_code == HTTPStatus.NO_CONTENT or not response.content:
        return None
    if "json" in response.headers.get("Content-Type", ""):
        try:
            return response.json()
        except ValueError:
            return response.text
    return response.text


class PathOutsideApi(PortalError):
    """A path that would leave CC's ``/v3`` API (with the account's bearer token) is refused."""


#: Characters no API path holds: a backslash (read as "/" by some servers), controls, "#".
_FORBIDDEN_IN_PATH = re.compile(r"[\\\x00-\x1f\x7f#]")


def api_path_check(path: str) -> str:
    """``path`` with a leading "/", if it stays inside the API base; else
    :class:`PathOutsideApi`. Refused: absolute URLs and ``//host``, ``.``/``..`` segments (also
    percent-encoded, however many times), encoded slashes, backslashes and control characters.
    """
    raw = path if path.startswith("/") else "/" + path
    bare = raw.split("?", 1)[0]
    decoded, previous = bare, None
    while decoded != previous:  # %252e%252e is %2e%2e is ..
        previous, decoded = decoded, unquote(decoded)
    problem = None
    if "://" in path or bare.startswith("//"):
        problem = "it is an absolute URL; give the path relative to /v3, e.g. /contact_lists"
    elif _FORBIDDEN_IN_PATH.search(decoded):
        problem = "it holds a backslash, a control character or a '#'"
    elif decoded.count("/") != bare.count("/"):
        problem = "it holds an encoded '/'"
    elif any(segment in (".", "..") for segment in decoded.split("/")):
        problem = "it holds a '.' or '..' segment, which would leave /v3"
    if problem:
        shown = path if len(path) <= 80 else path[:77] + "..."
        raise PathOutsideApi(f"the path {shown!r} is refused: {problem}.")
    return raw


def cc_call(
    *,
    account: ConnectedAccount,
    method: str,
    path: str,
    params: dict[str, Any] | None = None,
    json: Any = None,
    files: dict[str, Any] | None = None,
    data: bytes | None = None,
    lane: str = Lane.INTERACTIVE,
    accept: str = "application/json",
) -> Any:
    """Send one request to CC's v3 API for ``account`` and return the parsed answer.

    ``path`` is relative to the API base (``/contact_lists``); ``data`` sends pre-serialised
    JSON bytes (for bodies whose exact size matters). Returns JSON as Python objects,
    text for CSV, None for 204. Raises a :class:`CCError` subclass, ``quota.QuotaExhausted``,
    ``quota.QuotaStoreUnavailable``, or the token service's errors.
    """
    exchange = _exchange(
        account=account,
        method=method,
        path=path,
        lane=lane,
        accept=accept,
        content_type="application/json" if data is not None else None,
        send={"params": params, "json": json, "files": files, "data": data},
    )
    if exchange.error is not None:
        raise exchange.error
    return _parse(exchange.response)


def cc_forward(
    *,
    account: ConnectedAccount,
    method: str,
    path: str,
    body: bytes | None,
    content_type: str | None,
    accept: str,
    lane: str,
    max_wait: float,
    proxy_token_id: int = 0,
    account_just_read: bool = False,
) -> Exchange:
    """Send a request exactly as an application made it (the proxy's way out), and hand back
    CC's answer unread, to be streamed: ``path`` keeps its query string, ``body`` and
    ``content_type`` go as they are (JSON, a multipart file import). The call is booked,
    authorised, retried and recorded as :func:`cc_call` does, except that a slot further away
    than ``max_wait`` seconds is refused with ``quota.QuotaBusy`` and CC's errors are answered,
    not raised: ``Exchange.error`` classifies them. ``proxy_token_id`` books the slot in the
    token's part of the account's share. ``account_just_read``: the account was read from the
    database in this request (its tokens are not read again for the first attempt). Close
    ``Exchange.response`` when done.
    """
    return _exchange(
        account=account,
        method=method,
        path=path,
        lane=lane,
        accept=accept,
        content_type=content_type if body else None,
        send={"data": body or None},
        stream=True,
        max_wait=max_wait,
        proxy_token_id=proxy_token_id,
        account_just_read=account_just_read,
    )


@dataclass
class Exchange:
    """CC's final answer to one request: the response, its error (None for 1xx-3xx), the
    call-log entry of the attempt that got it and that attempt's booked slot."""

    response: requests.Response
    error: CCError | None
    call: ApiCall
    slot: quota.Reservation


def _exchange(
    *,
    account: ConnectedAccount,
    method: str,
    path: str,
    lane: str,
    accept: str,
    content_type: str | None,
    send: dict[str, Any],
    stream: bool = False,
    max_wait: float | None = None,
    proxy_token_id: int = 0,
    account_just_read: bool = False,
) -> Exchange:
    method = method.upper()
    lane = Lane.check(lane)
    path = api_path_check(path)
    template = path_template(path)
    api_key = account.api_key
    url = conf.cc_endpoints().api_base_url + path
    refreshed_after_401 = False

    for attempt in range(1, MAX_ATTEMPTS + 1):
        if _uses_activity_queue(method, path):
            until = cache.get(_account_backoff_key(account))
            if until and until > time.time():
                raise CCActivityQueueFull(
                    status=HTTPStatus.TOO_MANY_REQUESTS,
                    method=method,
                    path=template,
                    body={
                        "error_message": f"backing off this account for {until - time.time():.0f} s more"
                    },
                )
        # The token first: a refresh (or a slow database read) must not fall between the
        # booked slot and the send, or the call arrives late and crowds the next window.
        token = access_token(account=account, just_read=account_just_read and attempt == 1)
        version = account.token_version
        slot = quota.quota_acquire(
            api_key=api_key,
            lane=lane,
            account=account,
            max_wait=max_wait,
            proxy_token_id=proxy_token_id,
        )
        waited_ms = int(slot.waited * 1000)
        started = time.monotonic()
        status: int | None = None
        error_key = ""
        headers = {"Authorization": f"Bearer {token}", "Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            connect_timeout, read_timeout = conf.api_timeouts()
            session = shared_session(connect_timeout=connect_timeout, read_timeout=read_timeout)
            response = session.request(method, url, headers=headers, stream=stream, **send)
        except requests.RequestException as exc:
            timed_out = isinstance(exc, requests.Timeout)
            error_key = NO_ANSWER_TIMEOUT if timed_out else NO_ANSWER_CONNECTION
            _record(account, method, template, None, error_key, started, attempt, lane, waited_ms)
            never_sent = isinstance(exc, requests.ConnectTimeout) or _is_connect_failure(exc)
            if (never_sent or method in IDEMPOTENT) and attempt < MAX_ATTEMPTS:
                time.sleep(_backoff(attempt))
                continue
            raise CCTransportError(
                f"No answer from Constant Contact to {method} {template} "
                f"({type(exc).__name__}) after {attempt} attempt(s).",
                timeout=isinstance(exc, requests.Timeout),
            ) from None

        status = response.status_code
        error = (
            None
            if status < HTTPStatus.BAD_REQUEST
            else http_error_for(
                status=status,
                method=method,
                path=template,
                body=_parse(response),  # an error body is small: read it to classify it
                reset_at=next_utc_midnight(),
            )
        )
        error_key = error.error_key if error else ""
        call = _record(
            account,
            method,
            template,
            status,
            error_key,
            started,
            attempt,
            lane,
            waited_ms,
            error_detail=_error_detail(error.body) if error else "",
        )
        if error is None:
            return Exchange(response, None, call, slot)

        if status == HTTPStatus.TOO_MANY_REQUESTS:
            if error_key == THROTTLED:
                logger.error(
                    "CC throttled key %s (429 throttled) although every call was booked: "
                    "pausing the key for 1 s and widening its slot spacing.",
                    api_key.client_id,
                )
                quota.quota_pause(api_key=api_key, seconds=1.0)
                quota.quota_widen_margin(api_key=api_key)
                if attempt < MAX_ATTEMPTS:
                    response.close()
                    continue
            elif isinstance(error, CCQuotaExceeded):
                quota.quota_stop_until_next_day(api_key=api_key)
                logger.warning("CC's daily quota for key %s is spent.", api_key.client_id)
            else:
                cache.set(
                    _account_backoff_key(account),
                    time.time() + ACTIVITY_QUEUE_BACKOFF,
                    timeout=int(ACTIVITY_QUEUE_BACKOFF) + 5,
                )
            return Exchange(response, error, call, slot)
        if status == HTTPStatus.UNAUTHORIZED and not refreshed_after_401:
            refreshed_after_401 = True
            access_token(account=account, stale_version=version)
            response.close()
            continue
        if (
            status >= HTTPStatus.INTERNAL_SERVER_ERROR
            and method in IDEMPOTENT
            and attempt < MAX_ATTEMPTS
        ):
            response.close()
            time.sleep(_backoff(attempt))
            continue
        return Exchange(response, error, call, slot)
    raise AssertionError("unreachable")  # pragma: no cover


def _is_connect_failure(exc: requests.RequestException) -> bool:
    """True when the request provably never reached CC (refused, DNS, connect timeout)."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(reason, NewConnectionError)


def _record(
    account: ConnectedAccount,
    method: str,
    template: str,
    status: int | None,
    error_key: str,
    started: float,
    attempt: int,
    lane: str,
    slot_wait_ms: int = 0,
    *,
    error_detail: str = "",
) -> ApiCall:
    return api_call_record(
        api_key=account.api_key,
        account=account,
        method=method,
        path_template=template,
        status_code=status,
        error_key=error_key,
        latency_ms=int((time.monotonic() - started) * 1000),
        slot_wait_ms=slot_wait_ms,
        attempt=attempt,
        lane=lane,
        error_detail=error_detail,
    )


def _error_detail(body: Any) -> str:
    """CC's error body as the call ledger keeps it: text as sent, JSON re-serialised
    (``api_call_record`` hides secrets and shortens it)."""
    if body is None:
        return ""
    if isinstance(body, str):
        return body
    return json_module.dumps(body, ensure_ascii=False, default=str)


def cc_client(*, account: ConnectedAccount, lane: str = Lane.INTERACTIVE) -> ConstantContact:
    """CC's typed endpoints for ``account``, every call going through :func:`cc_call`."""

    def send(method: str, path: str, **kwargs: Any) -> Any:
        return cc_call(account=account, method=method, path=path, lane=lane, **kwargs)

    return ConstantContact(send)


__all__ = [
    "CCError",
    "CCHTTPError",
    "Exchange",
    "PathOutsideApi",
    "api_path_check",
    "cc_call",
    "cc_client",
    "cc_forward",
    "path_template",
]

"""The call ledger: every attempt at CC is recorded, and the day's rollup moves with it."""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import re
from collections.abc import Iterator
from http import HTTPStatus

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from ccportal.logging import HIDDEN, QUERY_SECRET_PARAMETERS, SECRET_PARAMETERS, scrub
from integrations.constant_contact.errors import QUOTA_EXCEEDED, THROTTLED
from integrations.models import (
    ApiCall,
    ApiKey,
    BulkJob,
    CallKind,
    ConnectedAccount,
    DailyUsage,
    HourlyUsage,
    Lane,
    ProxyToken,
)

#: How much of CC's error body a call keeps (the call's page shows all of it).
ERROR_DETAIL_MAX = 1000
#: A JWT (CC's access tokens are JWTs): three base64url parts, the first a JSON header.
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
#: ``Bearer <anything>``, as an Authorization header echoed back would show it.
_BEARER = re.compile(r"(?i)\b(bearer)\s+[^\s\"',;]+")
#: A secret as a JSON member: ``"access_token": "…"``.
_SECRET_MEMBER = re.compile(
    r'"(' + "|".join(SECRET_PARAMETERS + QUERY_SECRET_PARAMETERS) + r')"\s*:\s*"(?:[^"\\]|\\.)*"'
)

_current_job: contextvars.ContextVar[BulkJob | None] = contextvars.ContextVar(
    "ccportal_bulk_job", default=None
)


_current_proxy_token: contextvars.ContextVar[ProxyToken | None] = contextvars.ContextVar(
    "ccportal_proxy_token", default=None
)


@contextlib.contextmanager
def calls_attributed_to(job: BulkJob) -> Iterator[None]:
    """Every call recorded inside this block is counted as ``job``'s."""
    token = _current_job.set(job)
    try:
        yield
    finally:
        _current_job.reset(token)


@contextlib.contextmanager
def calls_made_through(proxy_token: ProxyToken) -> Iterator[None]:
    """Every call recorded inside this block was made through the proxy with ``proxy_token``."""
    token = _current_proxy_token.set(proxy_token)
    try:
        yield
    finally:
        _current_proxy_token.reset(token)


def api_call_record(
    *,
    api_key: ApiKey,
    account: ConnectedAccount | None,
    method: str,
    path_template: str,
    status_code: int | None,
    error_key: str = "",
    latency_ms: int = 0,
    slot_wait_ms: int = 0,
    attempt: int = 1,
    lane: str = Lane.INTERACTIVE,
    kind: str = CallKind.API,
    error_detail: str = "",
    at: dt.datetime | None = None,
) -> ApiCall:
    """Insert the ApiCall and bump its rollups — the key's UTC day (DailyUsage) and the key
    and account's UTC hour (HourlyUsage) — atomically. ``error_detail`` (CC's error body) is
    kept without secrets and at most :data:`ERROR_DETAIL_MAX` characters long."""
    at = at or timezone.now()
    throttled = status_code == HTTPStatus.TOO_MANY_REQUESTS and error_key == THROTTLED
    quota = status_code == HTTPStatus.TOO_MANY_REQUESTS and error_key == QUOTA_EXCEEDED
    failed = status_code is None or status_code >= HTTPStatus.BAD_REQUEST
    with transaction.atomic():
        call = ApiCall.objects.create(
            api_key=api_key,
            account=account,
            kind=kind,
            method=method.upper(),
            path_template=path_template[:200],
            status_code=status_code,
            error_key=error_key[:100],
            error_detail=error_detail_clean(error_detail),
            latency_ms=max(0, int(latency_ms)),
            slot_wait_ms=max(0, int(slot_wait_ms)),
            attempt=attempt,
            lane=lane,
            bulk_job=_current_job.get(),
            proxy_token=_current_proxy_token.get(),
            created_at=at,
        )
        day = at.astimezone(dt.UTC).date()
        increments = {
            # CC's daily budget counts API calls; token-endpoint calls are counted apart.
            "calls": F("calls") + int(kind == CallKind.API),
            "errors": F("errors") + int(failed),
            "throttled": F("throttled") + int(throttled),
            "quota_exceeded": F("quota_exceeded") + int(quota),
            "token_calls": F("token_calls") + int(kind == CallKind.TOKEN),
        }
        _bump(DailyUsage, increments, api_key=api_key, date=day)
        hour = at.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
        _bump(HourlyUsage, increments, api_key=api_key, account=account, hour=hour)
    return call


def error_detail_clean(text: str) -> str:
    """``text`` with no token in it, shortened to :data:`ERROR_DETAIL_MAX` characters.

    Secret parameters and URL passwords go the way the logs hide them (``scrub``); secrets
    as JSON members, bearer tokens and anything shaped like a JWT go too. Cleaned first, shortened after, so a token
    cut in two at the limit cannot slip past the patterns.
    """
    cleaned = _SECRET_MEMBER.sub(lambda m: f'"{m[1]}": "{HIDDEN}"', scrub(text))
    cleaned = _BEARER.sub(lambda m: f"{m[1]} {HIDDEN}", cleaned)
    cleaned = _JWT.sub(HIDDEN, cleaned).strip()
    if len(cleaned) > ERROR_DETAIL_MAX:
        cleaned = cleaned[: ERROR_DETAIL_MAX - 1] + "…"
    return cleaned


def _bump(model, increments: dict, **row) -> None:
    """Add ``increments`` to the rollup row ``row`` names, creating it on its first call
    (racing writers meet the unique constraint inside get_or_create, then update)."""
    if not model.objects.filter(**row).update(**increments):
        usage, _ = model.objects.get_or_create(**row)
        model.objects.filter(pk=usage.pk).update(**increments)

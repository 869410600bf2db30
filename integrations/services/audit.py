"""The call ledger: every attempt at CC is recorded, and the day's rollup moves with it."""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
from collections.abc import Iterator
from http import HTTPStatus

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from integrations.models import (
    ApiCall,
    ApiKey,
    BulkJob,
    CallKind,
    ConnectedAccount,
    DailyUsage,
    Lane,
)

_current_job: contextvars.ContextVar[BulkJob | None] = contextvars.ContextVar(
    "ccportal_bulk_job", default=None
)


@contextlib.contextmanager
def calls_attributed_to(job: BulkJob) -> Iterator[None]:
    """Every call recorded inside this block is counted as ``job``'s."""
    token = _current_job.set(job)
    try:
        yield
    finally:
        _current_job.reset(token)


def api_call_record(
    *,
    api_key: ApiKey,
    account: ConnectedAccount | None,
    method: str,
    path_template: str,
    status_code: int | None,
    error_key: str = "",
    latency_ms: int = 0,
    attempt: int = 1,
    lane: str = Lane.INTERACTIVE,
    kind: str = CallKind.API,
    at: dt.datetime | None = None,
) -> ApiCall:
    """Insert the ApiCall and bump the key's DailyUsage row for that UTC day, atomically."""
    at = at or timezone.now()
    throttled = status_code == HTTPStatus.TOO_MANY_REQUESTS and error_key == "throttled"
    quota = status_code == HTTPStatus.TOO_MANY_REQUESTS and error_key == "quota_exceeded"
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
            latency_ms=max(0, int(latency_ms)),
            attempt=attempt,
            lane=lane,
            bulk_job=_current_job.get(),
            created_at=at,
        )
        day = at.astimezone(dt.UTC).date()
        increments = {
            "calls": F("calls") + 1,
            "errors": F("errors") + int(failed),
            "throttled": F("throttled") + int(throttled),
            "quota_exceeded": F("quota_exceeded") + int(quota),
            "token_calls": F("token_calls") + int(kind == CallKind.TOKEN),
        }
        updated = DailyUsage.objects.filter(api_key=api_key, date=day).update(**increments)
        if not updated:
            # First call of the day: create the row (racing writers meet the unique constraint
            # inside get_or_create), then count this call like any other.
            usage, _ = DailyUsage.objects.get_or_create(api_key=api_key, date=day)
            DailyUsage.objects.filter(pk=usage.pk).update(**increments)
    return call

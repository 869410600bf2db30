"""Read-only database queries the pages and commands share (no HTTP: what CC itself says is
fetched by services)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import heapq
import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

from django.db import connection
from django.db.models import Aggregate, Count, F, IntegerField, Q, QuerySet, Sum
from django.db.models.functions import TruncMinute
from django.utils import timezone

from integrations import conf
from integrations.constant_contact.limits import next_utc_midnight
from integrations.models import (
    AccountStatus,
    ApiCall,
    ApiKey,
    BulkJob,
    CallKind,
    ConnectedAccount,
    DailyUsage,
    HourlyUsage,
    JobState,
)


def api_key_list() -> QuerySet[ApiKey]:
    return ApiKey.objects.order_by("name")


def api_key_find(*, ident: str) -> ApiKey | None:
    """The key a person names by its numeric id or its client id."""
    keys = api_key_list()
    if ident.isascii() and ident.isdigit():
        return keys.filter(pk=int(ident)).first()
    return keys.filter(client_id=ident).first()


def account_get(*, pk: int) -> ConnectedAccount | None:
    return account_list().filter(pk=pk).first()


def account_only_active() -> tuple[ConnectedAccount | None, int]:
    """The one connected account when exactly one is active, and how many are active."""
    active = list(account_list().filter(status=AccountStatus.ACTIVE)[:2])
    return (active[0] if len(active) == 1 else None), len(active)


def account_list(*, api_key: ApiKey | None = None) -> QuerySet[ConnectedAccount]:
    accounts = ConnectedAccount.objects.select_related("api_key").order_by("label", "pk")
    if api_key is not None:
        accounts = accounts.filter(api_key=api_key)
    return accounts


def key_usage_summary(*, api_key: ApiKey, now: dt.datetime | None = None) -> dict:
    """Today's usage of a key as the call ledger saw it, with a burn-rate forecast.

    ``calls_today`` counts API calls, which spend CC's daily budget (token-endpoint calls are
    ``token_calls_today``). ``utilisation_last_minute`` is calls sent in the last 60 s over
    what the per-second limit allows in 60 s; the forecast extrapolates the last 10 minutes'
    rate to the day's remainder.
    """
    now = now or timezone.now()
    today = now.astimezone(dt.UTC).date()
    midnight = next_utc_midnight(now)
    usage = DailyUsage.objects.filter(api_key=api_key, date=today).first()
    calls_today = usage.calls if usage else 0
    api_calls = ApiCall.objects.filter(api_key=api_key, kind=CallKind.API)
    last_minute = api_calls.filter(created_at__gt=now - dt.timedelta(seconds=60)).count()
    last_ten = api_calls.filter(created_at__gt=now - dt.timedelta(minutes=10)).count()
    remaining = max(0, api_key.per_day - calls_today)
    rate_per_second = last_ten / 600
    exhausted_at = None
    if rate_per_second > 0:
        candidate = now + dt.timedelta(seconds=remaining / rate_per_second)
        exhausted_at = candidate if candidate < midnight else None
    return {
        "key": api_key.client_id,
        "name": api_key.name,
        "tier": api_key.tier,
        "per_second": api_key.per_second,
        "per_day": api_key.per_day,
        "calls_today": calls_today,
        "remaining_today": remaining,
        "throttled_today": usage.throttled if usage else 0,
        "quota_429s_today": usage.quota_exceeded if usage else 0,
        "token_calls_today": usage.token_calls if usage else 0,
        "calls_last_minute": last_minute,
        "utilisation_last_minute": last_minute / (60 * api_key.per_second)
        if api_key.per_second
        else 0.0,
        "burn_rate_per_minute": rate_per_second * 60,
        "exhausted_at": exhausted_at.isoformat() if exhausted_at else None,
        "resets_at": midnight.isoformat(),
    }


def job_list(*, account: ConnectedAccount | None = None) -> QuerySet[BulkJob]:
    jobs = BulkJob.objects.select_related("account__api_key").order_by("-created_at")
    if account is not None:
        jobs = jobs.filter(account=account)
    return jobs


# --- the call log -----------------------------------------------------------------------------
#: Rows on one page of the call log.
CALL_LOG_PAGE = 50
#: How far apart two attempts of one request may be: the gateway's backoff (≤ 8 s), a booked
#: slot and a read timeout between them.
ATTEMPT_WINDOW = dt.timedelta(seconds=90)
#: Beyond this many single-value branches a filter is one ``IN`` query instead.
_MAX_BRANCHES = 32


@dataclass(frozen=True)
class CallFilter:
    """What the call log is narrowed to; empty fields do not narrow. ``status_from`` and
    ``status_to`` bound the status code (inclusive); ``no_answer`` asks for calls CC never
    answered; ``path`` is part of a path template, any case."""

    status_from: int | None = None
    status_to: int | None = None
    no_answer: bool = False
    account_id: int | None = None
    api_key_id: int | None = None
    lane: str = ""
    path: str = ""
    bulk_job_id: int | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


@dataclass(frozen=True)
class CallCursor:
    """Where a page of the log ends: the last row's time and id (the log's order is
    ``-created_at, -id``, so the next page is every row before this pair)."""

    created_at: dt.datetime
    pk: int

    def encode(self) -> str:
        raw = f"{self.created_at.astimezone(dt.UTC).isoformat()}|{self.pk}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> CallCursor:
        """The cursor ``encode`` wrote, or ValueError."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            stamp, pk = raw.split("|")
            created_at = dt.datetime.fromisoformat(stamp)
        except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
            raise ValueError("not a cursor of this log") from exc
        if created_at.tzinfo is None or not pk.isascii() or not pk.isdigit():
            raise ValueError("not a cursor of this log")
        return cls(created_at=created_at, pk=int(pk))


@dataclass(frozen=True)
class CallPage:
    calls: list[ApiCall]
    #: The cursor of the next (older) page; None on the last page.
    older: CallCursor | None


def _calls() -> QuerySet[ApiCall]:
    return ApiCall.objects.select_related("api_key", "account", "proxy_token").order_by(
        "-created_at", "-pk"
    )


#: A loose index scan: the first value, then again and again the next one above it.
_LOOSE_INDEX_SCAN = (
    "WITH RECURSIVE found(value) AS ("
    " SELECT (SELECT {col} FROM {table} WHERE {first} ORDER BY {col} LIMIT 1)"
    " UNION ALL"
    " SELECT (SELECT {col} FROM {table} WHERE {following} ORDER BY {col} LIMIT 1)"
    " FROM found WHERE found.value IS NOT NULL"
    ") SELECT value FROM found WHERE value IS NOT NULL"
)


def _distinct_in_index(column: str, low: int | None = None, high: int | None = None) -> list:
    """The distinct values of ``column`` (between ``low`` and ``high`` when given), one index
    seek each: neither SQLite nor PostgreSQL skips through an index for a DISTINCT by itself.
    ``column`` must lead an index of ApiCall."""
    quote = connection.ops.quote_name
    col = quote(ApiCall._meta.get_field(column).column)
    first = [f"{col} >= %s" if low is not None else f"{col} IS NOT NULL"]
    following = [f"{col} > found.value"]
    params_first = [low] if low is not None else []
    params_following = []
    if high is not None:
        first.append(f"{col} <= %s")
        following.append(f"{col} <= %s")
        params_first.append(high)
        params_following.append(high)
    # Only the model's own table and column names are spliced in; every value is a parameter.
    sql = _LOOSE_INDEX_SCAN.format(
        col=col,
        table=quote(ApiCall._meta.db_table),
        first=" AND ".join(first),
        following=" AND ".join(following),
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params_first, *params_following])
        return [row[0] for row in cursor.fetchall()]


def call_path_templates(*, contains: str = "") -> list[str]:
    """The path templates the log holds (a few dozen), those containing ``contains`` (any
    case) when given."""
    needle = contains.casefold()
    return [t for t in _distinct_in_index("path_template") if needle in t.casefold()]


def _narrowed(calls: QuerySet[ApiCall], f: CallFilter) -> QuerySet[ApiCall]:
    """``calls`` narrowed by every filter that is one index range (not status, not path)."""
    if f.account_id is not None:
        calls = calls.filter(account_id=f.account_id)
    if f.api_key_id is not None:
        calls = calls.filter(api_key_id=f.api_key_id)
    if f.lane:
        calls = calls.filter(lane=f.lane)
    if f.bulk_job_id is not None:
        calls = calls.filter(bulk_job_id=f.bulk_job_id)
    if f.since is not None:
        calls = calls.filter(created_at__gte=f.since)
    if f.until is not None:
        calls = calls.filter(created_at__lt=f.until)
    return calls


def _status_codes(f: CallFilter) -> list[int] | None:
    """The status codes the filter asks for (None: any)."""
    if f.status_from is None:
        return None
    if f.status_from == f.status_to:
        return [f.status_from]
    return _distinct_in_index("status_code", f.status_from, f.status_to)


def _branches(f: CallFilter) -> list[Q] | None:
    """The status and path filters as single-value conditions, each one index seek in the
    log's order; the log is their union. None: one query (no such filter, or too many)."""
    if f.no_answer:
        statuses = [Q(status_code__isnull=True)]
    else:
        codes = _status_codes(f)
        statuses = [Q()] if codes is None else [Q(status_code=code) for code in codes]
    paths = [Q()]
    if f.path:
        paths = [Q(path_template=t) for t in call_path_templates(contains=f.path)]
    branches = [status & path for status in statuses for path in paths]
    if branches == [Q()] or len(branches) > _MAX_BRANCHES:
        return None
    return branches


def _one_query(calls: QuerySet[ApiCall], f: CallFilter) -> QuerySet[ApiCall]:
    """The status and path filters as plain conditions (the export, and too many branches)."""
    if f.no_answer:
        calls = calls.filter(status_code__isnull=True)
    elif f.status_from is not None:
        calls = calls.filter(status_code__gte=f.status_from, status_code__lte=f.status_to)
    if f.path:
        calls = calls.filter(path_template__in=call_path_templates(contains=f.path))
    return calls


def call_log_page(
    *, filters: CallFilter, cursor: CallCursor | None = None, size: int = CALL_LOG_PAGE
) -> CallPage:
    """One page of the call log, newest first, after ``cursor`` (keyset paging on
    ``created_at, id``: no OFFSET, no COUNT, so a page costs the same on row 50 or 5 million).

    A status class or a path fragment names several values; each value is its own query that
    stops after ``size + 1`` rows of its index, and the page is the newest of them — one big
    range sorted whole would cost as many rows as the class holds.
    """
    calls = _narrowed(_calls(), filters)
    if cursor is not None:
        calls = calls.filter(
            Q(created_at__lt=cursor.created_at) | Q(created_at=cursor.created_at, pk__lt=cursor.pk),
            created_at__lte=cursor.created_at,  # the range the index seeks to
        )
    branches = _branches(filters)
    if branches is None:
        rows = list(_one_query(calls, filters)[: size + 1])
    else:
        found = [call for branch in branches for call in calls.filter(branch)[: size + 1]]
        rows = heapq.nlargest(size + 1, found, key=lambda c: (c.created_at, c.pk))
    page = rows[:size]
    older = CallCursor(page[-1].created_at, page[-1].pk) if len(rows) > size else None
    return CallPage(calls=page, older=older)


def call_export(*, filters: CallFilter) -> Iterator[ApiCall]:
    """Every call the filters keep, newest first, read from the database in chunks."""
    return _one_query(_narrowed(_calls(), filters), filters).iterator(chunk_size=2000)


def call_get(*, pk: int) -> ApiCall | None:
    return _calls().select_related("bulk_job").filter(pk=pk).first()


def call_attempts(*, call: ApiCall) -> list[ApiCall]:
    """The attempts of the logical request ``call`` was one attempt of, first to last.

    The gateway records each attempt as its own row, numbered from 1, and tries again only
    after a failure; so the others are the calls of the same key, account, method and path
    template within :data:`ATTEMPT_WINDOW`, numbered one apart, each before the next failed.
    A request of the same shape sent meanwhile may be taken for one of them.
    """
    near = ApiCall.objects.filter(
        api_key_id=call.api_key_id,
        account_id=call.account_id,
        method=call.method,
        path_template=call.path_template,
        created_at__gte=call.created_at - ATTEMPT_WINDOW,
        created_at__lte=call.created_at + ATTEMPT_WINDOW,
    ).exclude(pk=call.pk)
    chain = [call]
    if call.attempt > 1:
        before = near.filter(
            Q(created_at__lt=call.created_at) | Q(created_at=call.created_at, pk__lt=call.pk),
            attempt__lt=call.attempt,
        ).order_by("-created_at", "-pk")[:20]
        for other in before:
            if other.attempt == chain[0].attempt - 1 and other.failed:
                chain.insert(0, other)
            if chain[0].attempt == 1:
                break
    if call.failed:
        after = near.filter(
            Q(created_at__gt=call.created_at) | Q(created_at=call.created_at, pk__gt=call.pk),
            attempt__gt=call.attempt,
        ).order_by("created_at", "pk")[:20]
        for other in after:
            if not chain[-1].failed:
                break
            if other.attempt == chain[-1].attempt + 1:
                chain.append(other)
    return chain


# --- the dashboard ----------------------------------------------------------------------------
#: Minutes of the "calls per minute" chart, and days of the "daily calls" chart.
DASHBOARD_MINUTES = 60
DASHBOARD_DAYS = 30


def key_calls_per_minute(
    *, api_key: ApiKey, now: dt.datetime | None = None, minutes: int = DASHBOARD_MINUTES
) -> list[tuple[dt.datetime, int]]:
    """API calls of ``api_key`` in each of the last ``minutes`` whole minutes, oldest first,
    ending with the current (partial) minute; minutes without calls are 0."""
    now = (now or timezone.now()).astimezone(dt.UTC)
    current = now.replace(second=0, microsecond=0)
    start = current - dt.timedelta(minutes=minutes - 1)
    counts = dict(
        ApiCall.objects.filter(api_key=api_key, kind=CallKind.API, created_at__gte=start)
        .annotate(minute=TruncMinute("created_at", tzinfo=dt.UTC))
        .values("minute")
        .annotate(n=Count("pk"))
        .values_list("minute", "n")
    )
    return [
        (minute, counts.get(minute, 0))
        for minute in (start + dt.timedelta(minutes=i) for i in range(minutes))
    ]


def key_calls_per_day(
    *, api_key: ApiKey, now: dt.datetime | None = None, days: int = DASHBOARD_DAYS
) -> list[tuple[dt.date, int]]:
    """API calls of ``api_key`` on each of the last ``days`` UTC days, oldest first, today
    last; days without calls are 0."""
    today = (now or timezone.now()).astimezone(dt.UTC).date()
    first = today - dt.timedelta(days=days - 1)
    counts = dict(
        DailyUsage.objects.filter(api_key=api_key, date__gte=first).values_list("date", "calls")
    )
    return [
        (day, counts.get(day, 0)) for day in (first + dt.timedelta(days=i) for i in range(days))
    ]


def key_calls_today_by_account(*, api_key: ApiKey, now: dt.datetime | None = None) -> list[dict]:
    """Today's API calls of ``api_key`` per account, busiest first (from the hourly rollup;
    calls made for no account are the row whose ``account`` is None)."""
    now = (now or timezone.now()).astimezone(dt.UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    rows = (
        HourlyUsage.objects.filter(api_key=api_key, hour__gte=midnight)
        .values("account")
        .annotate(calls=Sum("calls"), errors=Sum("errors"))
        .filter(calls__gt=0)
        .order_by("-calls", "account")
    )
    accounts = ConnectedAccount.objects.in_bulk([r["account"] for r in rows if r["account"]])
    return [
        {"account": accounts.get(r["account"]), "calls": r["calls"], "errors": r["errors"]}
        for r in rows
    ]


def key_calls_today_by_proxy_token(
    *, api_key: ApiKey, now: dt.datetime | None = None
) -> list[dict]:
    """Today's calls of ``api_key`` made through the proxy, per portal token, busiest first:
    ``{"name", "calls", "errors"}`` (which application spends the key)."""
    now = (now or timezone.now()).astimezone(dt.UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return list(
        ApiCall.objects.filter(
            api_key=api_key,
            kind=CallKind.API,
            created_at__gte=midnight,
            proxy_token__isnull=False,
        )
        .values(name=F("proxy_token__name"))
        .annotate(
            calls=Count("pk"),
            errors=Count("pk", filter=Q(status_code__gte=400) | Q(status_code__isnull=True)),
        )
        .order_by("-calls", "name")
    )


class _NearestRank(Aggregate):
    """PostgreSQL's ``percentile_disc``: the smallest value that at least ``share`` of the rows
    do not exceed (the nearest-rank percentile)."""

    function = "percentile_disc"
    template = "%(function)s(%(share)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = IntegerField()

    def __init__(self, expression: str, *, share: float) -> None:
        super().__init__(expression, share=float(share))


def _nearest_rank(ordered: list[int], share: float) -> int:
    """The nearest-rank percentile of ``ordered`` (sorted, not empty): its ceil(share·n)-th."""
    return ordered[max(1, math.ceil(share * len(ordered) - 1e-9)) - 1]


def account_slot_waits(
    *, api_key: ApiKey, since: dt.datetime | None = None
) -> dict[int | None, dict[str, int]]:
    """How long ``api_key``'s API calls since ``since`` (default: today 00:00 UTC) waited for
    their send slot, per account: ``{account_id: {"p50_ms", "p95_ms", "calls"}}``, for the
    accounts with at least one such call (calls made for no account under ``None``).

    Percentiles are nearest-rank (the smallest wait that at least that share of the calls did
    not exceed), so each is a wait some call really had, and both backends give the same
    answer. Only the key's calls in the range are read, through the ``created_at`` indexes.
    PostgreSQL ranks them itself (``percentile_disc``: one row per account comes back); SQLite
    has no percentile function, and sorting the waits here is quicker than its window
    functions over the same rows.
    """
    if since is None:
        since = timezone.now().astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    calls = ApiCall.objects.filter(
        api_key=api_key, kind=CallKind.API, created_at__gte=since
    ).order_by()
    if connection.vendor == "postgresql":
        ranked = calls.values("account_id").annotate(
            p50_ms=_NearestRank("slot_wait_ms", share=0.5),
            p95_ms=_NearestRank("slot_wait_ms", share=0.95),
            calls=Count("pk"),
        )
        return {row.pop("account_id"): row for row in ranked}
    by_account: dict[int | None, list[int]] = defaultdict(list)
    for account_id, wait in calls.values_list("account_id", "slot_wait_ms"):
        by_account[account_id].append(wait)
    waits = {}
    for account_id, found in by_account.items():
        found.sort()
        waits[account_id] = {
            "p50_ms": _nearest_rank(found, 0.5),
            "p95_ms": _nearest_rank(found, 0.95),
            "calls": len(found),
        }
    return waits


def accounts_needing_attention(
    *, api_key: ApiKey | None = None, now: dt.datetime | None = None
) -> list[tuple[ConnectedAccount, str]]:
    """Accounts someone has to act on, each with what is wrong: CC refused their refresh
    token (reconnect), refreshes keep failing, tokens no key opens, or a refresh token idle
    long enough that CC will soon expire it."""
    now = now or timezone.now()
    idle_days = conf.token_keepalive_idle_days()
    found = []
    for account in account_list(api_key=api_key).exclude(status=AccountStatus.DISCONNECTED):
        health = account.health(at=now)
        if health.attention:
            found.append((account, health.reason))
        elif (idle := account.refresh_token_idle_days(at=now)) is not None and idle > idle_days:
            found.append(
                (
                    account,
                    f"refresh token idle {idle} days; CC expires it at 180 "
                    "(manage.py cc_tokens_keepalive exercises it)",
                )
            )
    return found


def jobs_in_progress(*, api_key: ApiKey | None = None) -> QuerySet[BulkJob]:
    """Jobs running, waiting or paused, newest first."""
    jobs = job_list().filter(state__in=BulkJob.IN_PROGRESS_STATES)
    if api_key is not None:
        jobs = jobs.filter(account__api_key=api_key)
    return jobs


def job_counts_by_state() -> dict[str, int]:
    """Every job state, with how many jobs are in it (0 included)."""
    counts = dict(BulkJob.objects.values_list("state").annotate(n=Count("pk")).order_by())
    return {state: counts.get(state, 0) for state in JobState.values}


def account_counts_by_status() -> dict[str, int]:
    """Every account status, with how many accounts have it (0 included)."""
    counts = dict(ConnectedAccount.objects.values_list("status").annotate(n=Count("pk")).order_by())
    return {status: counts.get(status, 0) for status in AccountStatus.values}

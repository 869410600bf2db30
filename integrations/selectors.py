"""Read-only queries the pages and commands share."""

from __future__ import annotations

import datetime as dt

from django.db.models import QuerySet
from django.utils import timezone

from integrations.models import ApiCall, ApiKey, BulkJob, CallKind, ConnectedAccount, DailyUsage


def api_key_list() -> QuerySet[ApiKey]:
    return ApiKey.objects.order_by("name")


def account_list(*, api_key: ApiKey | None = None) -> QuerySet[ConnectedAccount]:
    accounts = ConnectedAccount.objects.select_related("api_key").order_by("label", "pk")
    if api_key is not None:
        accounts = accounts.filter(api_key=api_key)
    return accounts


def usage_today(*, api_key: ApiKey) -> DailyUsage | None:
    return DailyUsage.objects.filter(api_key=api_key, date=timezone.now().date()).first()


def key_usage_summary(*, api_key: ApiKey, now: dt.datetime | None = None) -> dict:
    """Today's usage of a key as the call ledger saw it, with a burn-rate forecast.

    ``calls_today`` counts API calls, which spend CC's daily budget (token-endpoint calls are
    ``token_calls_today``). ``utilisation_last_minute`` is calls sent in the last 60 s over
    what the per-second limit allows in 60 s; the forecast extrapolates the last 10 minutes'
    rate to the day's remainder.
    """
    now = now or timezone.now()
    today = now.astimezone(dt.UTC).date()
    usage = DailyUsage.objects.filter(api_key=api_key, date=today).first()
    # Token-endpoint calls are in the rollup but spend none of CC's daily API budget.
    calls_today = usage.calls - usage.token_calls if usage else 0
    api_calls = ApiCall.objects.filter(api_key=api_key, kind=CallKind.API)
    last_minute = api_calls.filter(created_at__gt=now - dt.timedelta(seconds=60)).count()
    last_ten = api_calls.filter(created_at__gt=now - dt.timedelta(minutes=10)).count()
    remaining = max(0, api_key.per_day - calls_today)
    rate_per_second = last_ten / 600
    midnight = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
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


def account_contact_lists(*, account: ConnectedAccount, fresh: bool = False) -> list[dict]:
    """The account's CC lists with membership counts, cached for a minute so page views do not
    spend the key's budget."""
    from django.core.cache import cache

    from integrations.services.gateway import cc_client

    cache_key = f"ccportal:lists:{account.pk}:{account.token_version}"
    lists = None if fresh else cache.get(cache_key)
    if lists is None:
        lists = cc_client(account=account).contact_lists()
        cache.set(cache_key, lists, timeout=60)
    return lists


def job_list(*, account: ConnectedAccount | None = None) -> QuerySet[BulkJob]:
    jobs = BulkJob.objects.select_related("account__api_key").order_by("-created_at")
    if account is not None:
        jobs = jobs.filter(account=account)
    return jobs


def api_call_list(*, limit: int = 200) -> QuerySet[ApiCall]:
    return ApiCall.objects.select_related("api_key", "account").order_by("-created_at", "-pk")[
        :limit
    ]

"""The dashboard's per-key panel: quota gauge, charts, forecast, 429s, accounts and jobs.

The dashboard page renders one panel per key and each panel re-fetches itself every few
seconds (htmx), so the figures move without a page reload. Every figure of the day comes from
``selectors.key_usage_summary`` — the same dict ``manage.py cc_usage --json`` prints — and each
account's share, cap, weight and slot waits from ``services.account_usage``, the rows it prints
under ``accounts``.
"""

from __future__ import annotations

import datetime as dt

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET

from integrations import charts, selectors
from integrations.models import ApiKey
from integrations.permissions import VIEW_PORTAL, portal_permission_required
from integrations.services.account_usage import account_usage_rows
from integrations.services.quota import QuotaStoreUnavailable, key_quota

#: Seconds between two refreshes of a panel.
REFRESH_SECONDS = 5


def key_panel_context(api_key: ApiKey, *, now: dt.datetime | None = None) -> dict:
    now = now or timezone.now()
    usage = selectors.key_usage_summary(api_key=api_key, now=now)
    gauge = charts.Gauge(
        used=usage["calls_today"],
        quota=usage["per_day"],
        background_cap=key_quota(api_key).background_per_day,
    )
    chart_id = f"key-{api_key.pk}"
    problems_429 = usage["throttled_today"] + usage["quota_429s_today"]
    return {
        "key": api_key,
        "usage": usage,
        "gauge": gauge,
        "gauge_svg": gauge.svg(chart_id=f"{chart_id}-gauge"),
        "reserve_calls": usage["per_day"] - gauge.background_cap,
        "over_quota": max(0, usage["calls_today"] - usage["per_day"]),
        "resets_at": parse_datetime(usage["resets_at"]),
        "exhausted_at": parse_datetime(usage["exhausted_at"]) if usage["exhausted_at"] else None,
        "problems_429": problems_429,
        "minutes_svg": charts.calls_per_minute(
            selectors.key_calls_per_minute(api_key=api_key, now=now),
            per_second=usage["per_second"],
            chart_id=f"{chart_id}-minutes",
        ),
        "days_svg": charts.calls_per_day(
            selectors.key_calls_per_day(api_key=api_key, now=now),
            per_day=usage["per_day"],
            chart_id=f"{chart_id}-days",
        ),
        **_by_account(api_key, now=now),
        "by_token": selectors.key_calls_today_by_proxy_token(api_key=api_key, now=now),
        "attention": selectors.accounts_needing_attention(api_key=api_key, now=now),
        "jobs": list(selectors.jobs_in_progress(api_key=api_key)[:10]),
        "refresh_seconds": REFRESH_SECONDS,
        "now": now,
    }


def _by_account(api_key: ApiKey, *, now: dt.datetime) -> dict:
    """Today's calls per account (the hourly rollup, busiest first), each row with the
    account's part of the key as ``usage``: its row of ``account_usage_rows`` (share, cap,
    weight, slot waits), None for calls made for no account. When the quota ledger does not
    answer, ``ledger_down`` is set and no row has ``usage``."""
    rows = selectors.key_calls_today_by_account(api_key=api_key, now=now)
    try:
        usage = {row["id"]: row for row in account_usage_rows(api_key, now=now)}
    except QuotaStoreUnavailable:
        return {"by_account": rows, "ledger_down": True}
    for row in rows:
        row["usage"] = usage.get(row["account"].pk) if row["account"] else None
    return {"by_account": rows, "ledger_down": False}


@portal_permission_required(VIEW_PORTAL)
@require_GET
def key_panel(request: HttpRequest, key_pk: int) -> HttpResponse:
    """One key's panel (the fragment the dashboard polls)."""
    api_key = get_object_or_404(ApiKey, pk=key_pk)
    return render(request, "integrations/_key_panel.html", key_panel_context(api_key))

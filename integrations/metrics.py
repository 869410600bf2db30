"""The portal's figures for Prometheus, read from the database (and the quota ledger) at each
scrape: nothing is counted in process memory, so every web process answers the same and a
restart loses nothing.

=============================================  ==================================================
``ccportal_calls_today{key}``                  API calls recorded today (UTC), what CC's budget counts
``ccportal_quota_per_day{key}``                the key's daily quota
``ccportal_remaining_today{key}``              quota left today
``ccportal_429s_today{key,reason}``            CC's 429s today: ``throttled`` or ``quota_exceeded``
``ccportal_token_refreshes_today{key}``        calls to CC's token endpoint today
``ccportal_limiter_wait_seconds{key}``         how long a call booked now would wait for its slot
``ccportal_limiter_margin_ratio{key}``         the key's extra spacing between calls (share of 1/rate)
``ccportal_quota_store_up``                    1 when the quota ledger answers
``ccportal_jobs{state}``                       sync jobs per state
``ccportal_accounts{status}``                  connected accounts per status
=============================================  ==================================================
"""

from __future__ import annotations

from collections.abc import Iterator

from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from integrations import selectors
from integrations.services.quota import QuotaStoreUnavailable, quota_usage


class PortalCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        labels = ["key"]
        calls = GaugeMetricFamily(
            "ccportal_calls_today", "API calls recorded today (UTC).", labels=labels
        )
        quota = GaugeMetricFamily("ccportal_quota_per_day", "The key's daily quota.", labels=labels)
        remaining = GaugeMetricFamily(
            "ccportal_remaining_today", "Quota left today.", labels=labels
        )
        four29 = GaugeMetricFamily(
            "ccportal_429s_today", "CC's 429 answers today.", labels=["key", "reason"]
        )
        refreshes = GaugeMetricFamily(
            "ccportal_token_refreshes_today", "Calls to CC's token endpoint today.", labels=labels
        )
        wait = GaugeMetricFamily(
            "ccportal_limiter_wait_seconds",
            "Seconds a call booked now would wait for its slot.",
            labels=labels,
        )
        margin = GaugeMetricFamily(
            "ccportal_limiter_margin_ratio",
            "Extra spacing between the key's calls, as a share of 1/rate.",
            labels=labels,
        )
        store_up = 1
        for api_key in selectors.api_key_list():
            usage = selectors.key_usage_summary(api_key=api_key, now=now)
            key = [api_key.client_id]
            calls.add_metric(key, usage["calls_today"])
            quota.add_metric(key, usage["per_day"])
            remaining.add_metric(key, usage["remaining_today"])
            four29.add_metric([api_key.client_id, "throttled"], usage["throttled_today"])
            four29.add_metric([api_key.client_id, "quota_exceeded"], usage["quota_429s_today"])
            refreshes.add_metric(key, usage["token_calls_today"])
            try:
                ledger = quota_usage(api_key=api_key)
            except QuotaStoreUnavailable:
                store_up = 0
                continue
            next_slot = ledger["next_slot_at"]
            wait.add_metric(key, max(0.0, (next_slot - now).total_seconds()) if next_slot else 0.0)
            margin.add_metric(key, ledger["margin"])
        yield from (calls, quota, remaining, four29, refreshes, wait, margin)
        yield GaugeMetricFamily(
            "ccportal_quota_store_up", "1 when the quota ledger answers.", value=store_up
        )
        jobs = GaugeMetricFamily("ccportal_jobs", "Sync jobs per state.", labels=["state"])
        for state, count in selectors.job_counts_by_state().items():
            jobs.add_metric([state], count)
        yield jobs
        accounts = GaugeMetricFamily(
            "ccportal_accounts", "Connected accounts per status.", labels=["status"]
        )
        for status, count in selectors.account_counts_by_status().items():
            accounts.add_metric([status], count)
        yield accounts

"""Each account's part of its key today: calls booked, share of the key, cap, weight, slot waits.

The booked calls, caps and weights are the quota ledger's (``quota.quota_account_usage``), so
they are what the fair share and the caps act on; the slot waits come from the call log
(``selectors.account_slot_waits``). ``manage.py cc_usage`` and the dashboard's key panel show
the same rows.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone

from integrations import selectors
from integrations.models import ApiKey
from integrations.services.quota import quota_account_usage, quota_usage

__all__ = ["account_usage_rows"]


def account_usage_rows(api_key: ApiKey, *, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """One row per account of ``api_key``, most calls booked today first (then by name):

    ``id``, ``name`` (``display_name``), ``calls_today`` (booked today in the shared ledger),
    ``share`` (of the key's calls booked today, 0 to 1; 0 when the key has none), ``cap`` (calls
    a day, None without one), ``cap_remaining`` (None without a cap; 0 once it is reached),
    ``weight``, and ``slot_wait_p50_ms`` / ``slot_wait_p95_ms`` over today's API calls (None
    when it made none).

    Raises ``quota.QuotaStoreUnavailable`` when the ledger cannot be read.
    """
    now = (now or timezone.now()).astimezone(dt.UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    ledger = quota_account_usage(api_key=api_key)
    key_booked = quota_usage(api_key=api_key)["booked"]
    waits = selectors.account_slot_waits(api_key=api_key, since=midnight)
    rows = []
    for account in selectors.account_list(api_key=api_key):
        part = ledger.get(account.pk)
        if part is None:  # connected after the ledger was read
            continue
        wait = waits.get(account.pk, {})
        rows.append(
            {
                "id": account.pk,
                "name": account.display_name,
                "calls_today": part["booked"],
                "share": part["booked"] / key_booked if key_booked else 0.0,
                "cap": part["cap"],
                "cap_remaining": part["remaining"],
                "weight": part["weight"],
                "slot_wait_p50_ms": wait.get("p50_ms"),
                "slot_wait_p95_ms": wait.get("p95_ms"),
            }
        )
    rows.sort(key=lambda row: (-row["calls_today"], row["name"].casefold(), row["id"]))
    return rows

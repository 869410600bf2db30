"""``account_usage_rows``: each account's part of its key today, from real bookings in the
shared ledger and real rows in the call log."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from integrations.models import Lane
from integrations.services.account_usage import account_usage_rows
from integrations.services.quota import AccountCapReached, quota_reserve
from tests.factories import ConnectedAccountFactory, calls_waited
from tests.integrations.services.quota_support.stores import (
    STORES,
    StoreUnderTest,
    custom_key,
    store_under_test,
)

pytestmark = pytest.mark.django_db

ROW_KEYS = {
    "id",
    "name",
    "calls_today",
    "share",
    "cap",
    "cap_remaining",
    "weight",
    "slot_wait_p50_ms",
    "slot_wait_p95_ms",
}


@pytest.fixture(params=STORES)
def store(request, settings) -> StoreUnderTest:
    return store_under_test(request, settings)


@pytest.fixture(autouse=True)
def fresh_account_policy(settings):
    """Every test reads the accounts' weights and caps as it set them."""
    settings.CC_QUOTA_ACCOUNT_REFRESH = 0.0


def book(key, account, times: int = 1, *, lane: str = Lane.BACKGROUND) -> None:
    for _ in range(times):
        quota_reserve(api_key=key, lane=lane, account=account)


def record(key, account, *waits: int, at: dt.datetime | None = None) -> None:
    calls_waited(key, account, *waits, at=at)


def test_rows_combine_the_ledger_and_the_call_log_busiest_first(store):
    key = custom_key(per_second=1000, per_day=1000)
    heavy = ConnectedAccountFactory(api_key=key, label="heavy@example.com", share_weight=3)
    capped = ConnectedAccountFactory(api_key=key, label="capped@example.com", daily_cap=50)
    idle = ConnectedAccountFactory(api_key=key, label="idle@example.com", daily_share=0.1)
    book(key, heavy, 6)
    book(key, capped, 2)
    book(key, None, 2, lane=Lane.INTERACTIVE)  # the key's, no account's (e.g. Connect)
    record(key, heavy, 40, 10, 30, 20)
    record(key, capped, 900)

    rows = account_usage_rows(key)

    assert [row["name"] for row in rows] == [
        "heavy@example.com",
        "capped@example.com",
        "idle@example.com",
    ]
    assert all(set(row) == ROW_KEYS for row in rows)
    assert rows[0] == {
        "id": heavy.pk,
        "name": "heavy@example.com",
        "calls_today": 6,
        "share": pytest.approx(0.6),
        "cap": None,
        "cap_remaining": None,
        "weight": 3,
        "slot_wait_p50_ms": 20,
        "slot_wait_p95_ms": 40,
    }
    assert rows[1] == {
        "id": capped.pk,
        "name": "capped@example.com",
        "calls_today": 2,
        "share": pytest.approx(0.2),
        "cap": 50,
        "cap_remaining": 48,
        "weight": 1,
        "slot_wait_p50_ms": 900,
        "slot_wait_p95_ms": 900,
    }
    # No calls yet: nothing booked, no share, no waits; its share cap is 10% of 1,000.
    assert rows[2] == {
        "id": idle.pk,
        "name": "idle@example.com",
        "calls_today": 0,
        "share": 0.0,
        "cap": 100,
        "cap_remaining": 100,
        "weight": 1,
        "slot_wait_p50_ms": None,
        "slot_wait_p95_ms": None,
    }


def test_a_reached_cap_leaves_nothing_remaining(store):
    key = custom_key(per_second=1000, per_day=1000)
    account = ConnectedAccountFactory(api_key=key, daily_cap=3)
    book(key, account, 3)
    with pytest.raises(AccountCapReached):
        book(key, account)

    [row] = account_usage_rows(key)

    assert (row["calls_today"], row["cap"], row["cap_remaining"]) == (3, 3, 0)
    assert row["share"] == 1.0


def test_a_key_without_calls_today_has_zero_shares(store):
    key = custom_key(per_second=10, per_day=1000)
    accounts = [ConnectedAccountFactory(api_key=key) for _ in range(2)]

    rows = account_usage_rows(key)

    assert {row["id"] for row in rows} == {a.pk for a in accounts}
    assert all(row["calls_today"] == 0 and row["share"] == 0.0 for row in rows)


def test_other_keys_and_yesterdays_calls_are_left_out(store):
    key = custom_key(per_second=1000, per_day=1000)
    other = custom_key(per_second=1000, per_day=1000)
    mine = ConnectedAccountFactory(api_key=key)
    theirs = ConnectedAccountFactory(api_key=other)
    book(key, mine, 2)
    book(other, theirs, 5)
    record(key, mine, 10, 20)
    midnight = timezone.now().astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    record(key, mine, 5_000, at=midnight - dt.timedelta(minutes=1))
    record(other, theirs, 7_000)

    [row] = account_usage_rows(key)

    assert row["id"] == mine.pk
    assert (row["calls_today"], row["share"]) == (2, 1.0)
    assert (row["slot_wait_p50_ms"], row["slot_wait_p95_ms"]) == (10, 20)

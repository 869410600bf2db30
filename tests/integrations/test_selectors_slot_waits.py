"""``selectors.account_slot_waits``: each account's slot-wait percentiles over a key's calls."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from integrations.models import ApiCall, CallKind
from integrations.selectors import account_slot_waits
from tests.factories import ApiKeyFactory, ConnectedAccountFactory, calls_waited

pytestmark = pytest.mark.django_db


def record(key, account, wait_ms, *, at=None, kind=CallKind.API):
    calls_waited(key, account, wait_ms, at=at, kind=kind)


def nearest_rank(values: list[int], percent: int) -> int:
    """The ceil(percent/100 · n)-th smallest, in exact integers."""
    ordered = sorted(values)
    return ordered[-(-percent * len(ordered) // 100) - 1]


@pytest.fixture
def midnight() -> dt.datetime:
    return timezone.now().astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def test_percentiles_are_nearest_rank_per_account(midnight):
    key = ApiKeyFactory()
    busy, quiet, single = (ConnectedAccountFactory(api_key=key) for _ in range(3))
    # 1..20 ms shuffled: p50 is the 10th smallest, p95 the 19th.
    waits = list(range(1, 21))
    random.Random(7).shuffle(waits)
    for wait in waits:
        record(key, busy, wait)
    for wait in (400, 100, 300, 200):
        record(key, quiet, wait)
    record(key, single, 42)

    found = account_slot_waits(api_key=key, since=midnight)

    assert found[busy.pk] == {"p50_ms": 10, "p95_ms": 19, "calls": 20}
    assert found[quiet.pk] == {"p50_ms": 200, "p95_ms": 400, "calls": 4}
    assert found[single.pk] == {"p50_ms": 42, "p95_ms": 42, "calls": 1}


@pytest.mark.parametrize("count", [1, 2, 3, 19, 20, 21, 99, 100, 101, 137])
def test_every_count_agrees_with_the_nearest_rank_definition(count, midnight):
    key = ApiKeyFactory()
    account = ConnectedAccountFactory(api_key=key)
    rng = random.Random(count)
    waits = [rng.randrange(0, 5_000) for _ in range(count)]
    for wait in waits:
        record(key, account, wait)

    found = account_slot_waits(api_key=key, since=midnight)[account.pk]

    assert found == {
        "p50_ms": nearest_rank(waits, 50),
        "p95_ms": nearest_rank(waits, 95),
        "calls": count,
    }


def test_accounts_of_every_size_from_1_to_60_calls_in_one_query(midnight):
    key = ApiKeyFactory()
    rng = random.Random(60)
    expected = {}
    for count in range(1, 61):
        account = ConnectedAccountFactory(api_key=key)
        waits = [rng.randrange(0, 300) for _ in range(count)]
        ApiCall.objects.bulk_create(
            ApiCall(
                api_key=key,
                account=account,
                method="GET",
                path_template="/contacts",
                status_code=200,
                slot_wait_ms=wait,
            )
            for wait in waits
        )
        expected[account.pk] = {
            "p50_ms": nearest_rank(waits, 50),
            "p95_ms": nearest_rank(waits, 95),
            "calls": count,
        }

    with CaptureQueriesContext(connection) as queries:
        found = account_slot_waits(api_key=key, since=midnight)

    assert found == expected
    assert len(queries) == 1


def test_other_keys_earlier_days_and_token_calls_are_left_out(midnight):
    key, other_key = ApiKeyFactory(), ApiKeyFactory()
    account = ConnectedAccountFactory(api_key=key)
    for wait in (10, 20, 30):
        record(key, account, wait)
    record(key, account, 9_000, at=midnight - dt.timedelta(seconds=1))  # yesterday
    record(key, account, 8_000, kind=CallKind.TOKEN)
    record(other_key, account, 7_000)

    assert account_slot_waits(api_key=key, since=midnight) == {
        account.pk: {"p50_ms": 20, "p95_ms": 30, "calls": 3}
    }
    # Yesterday's call counts once the range reaches back to it.
    earlier = account_slot_waits(api_key=key, since=midnight - dt.timedelta(hours=1))
    assert earlier[account.pk] == {"p50_ms": 20, "p95_ms": 9_000, "calls": 4}


def test_calls_for_no_account_are_their_own_row_and_no_calls_is_empty(midnight):
    key = ApiKeyFactory()
    ConnectedAccountFactory(api_key=key)
    assert account_slot_waits(api_key=key, since=midnight) == {}

    record(key, None, 5)
    record(key, None, 15)
    assert account_slot_waits(api_key=key, since=midnight) == {
        None: {"p50_ms": 5, "p95_ms": 15, "calls": 2}
    }


def test_since_defaults_to_today_utc_and_the_answer_is_one_small_query(midnight):
    key = ApiKeyFactory()
    accounts = [ConnectedAccountFactory(api_key=key) for _ in range(5)]
    for account in accounts:
        for wait in range(50):
            record(key, account, wait)
    record(key, accounts[0], 9_000, at=midnight - dt.timedelta(minutes=5))

    with CaptureQueriesContext(connection) as queries:
        found = account_slot_waits(api_key=key)

    assert len(queries) == 1
    assert set(found) == {a.pk for a in accounts}
    assert all(row == {"p50_ms": 24, "p95_ms": 47, "calls": 50} for row in found.values())

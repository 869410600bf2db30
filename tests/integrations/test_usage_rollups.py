"""The rollups the dashboard reads, and the dashboard's selectors over them."""

from __future__ import annotations

import datetime as dt
import importlib
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.db import connection

from integrations import selectors
from integrations.models import AccountStatus, CallKind, DailyUsage, HourlyUsage
from integrations.services.audit import api_call_record
from tests.factories import ApiKeyFactory, ConnectedAccountFactory

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 3, 10, 14, 30, 20, tzinfo=dt.UTC)


def _call(key, account, at, *, status=200, error_key="", kind=CallKind.API):
    return api_call_record(
        api_key=key,
        account=account,
        method="GET",
        path_template="/contact_lists",
        status_code=status,
        error_key=error_key,
        kind=kind,
        at=at,
    )


def test_each_call_moves_its_accounts_hour_and_its_keys_day():
    key = ApiKeyFactory()
    ann, bob = ConnectedAccountFactory(api_key=key), ConnectedAccountFactory(api_key=key)
    _call(key, ann, NOW)
    _call(key, ann, NOW + dt.timedelta(minutes=10), status=429, error_key="throttled")
    _call(key, bob, NOW)
    _call(key, ann, NOW + dt.timedelta(hours=1))
    _call(key, None, NOW, kind=CallKind.TOKEN)

    hour = NOW.replace(minute=0, second=0)
    rows = {
        (r.account_id, r.hour): (r.calls, r.errors, r.throttled, r.token_calls)
        for r in HourlyUsage.objects.all()
    }
    assert rows == {
        (ann.pk, hour): (2, 1, 1, 0),
        (bob.pk, hour): (1, 0, 0, 0),
        (ann.pk, hour + dt.timedelta(hours=1)): (1, 0, 0, 0),
        (None, hour): (0, 0, 0, 1),
    }
    assert DailyUsage.objects.get(api_key=key).calls == 4


def test_calls_per_minute_covers_the_last_hour_with_empty_minutes_as_zero():
    key = ApiKeyFactory()
    account = ConnectedAccountFactory(api_key=key)
    for seconds in (0, 5, 61, 3600 + 1):  # the last one is more than an hour before NOW
        _call(key, account, NOW - dt.timedelta(seconds=seconds))
    _call(key, account, NOW, kind=CallKind.TOKEN)  # spends no budget: not drawn

    series = selectors.key_calls_per_minute(api_key=key, now=NOW)
    assert len(series) == 60
    assert series[-1] == (NOW.replace(second=0), 2)
    assert series[-2] == (NOW.replace(second=0) - dt.timedelta(minutes=1), 1)
    assert sum(n for _, n in series) == 3


def test_calls_per_day_covers_thirty_days_ending_today():
    key = ApiKeyFactory()
    account = ConnectedAccountFactory(api_key=key)
    _call(key, account, NOW)
    _call(key, account, NOW - dt.timedelta(days=29))
    _call(key, account, NOW - dt.timedelta(days=30))  # outside the window

    series = selectors.key_calls_per_day(api_key=key, now=NOW)
    assert len(series) == 30
    assert series[0] == (NOW.date() - dt.timedelta(days=29), 1)
    assert series[-1] == (NOW.date(), 1)
    assert sum(n for _, n in series) == 2


def test_todays_calls_by_account_busiest_first():
    key = ApiKeyFactory()
    ann, bob = ConnectedAccountFactory(api_key=key), ConnectedAccountFactory(api_key=key)
    for _ in range(3):
        _call(key, bob, NOW)
    _call(key, ann, NOW)
    _call(key, ann, NOW - dt.timedelta(days=1))  # yesterday

    rows = selectors.key_calls_today_by_account(api_key=key, now=NOW)
    assert [(r["account"], r["calls"]) for r in rows] == [(bob, 3), (ann, 1)]


def test_accounts_needing_attention_say_why():
    key = ApiKeyFactory()
    fine = ConnectedAccountFactory(api_key=key)
    refused = ConnectedAccountFactory(api_key=key, status=AccountStatus.NEEDS_RECONNECT)
    failing = ConnectedAccountFactory(api_key=key, refresh_failures=3)
    idle = ConnectedAccountFactory(
        api_key=key, refresh_token_last_used_at=NOW - dt.timedelta(days=151)
    )
    ConnectedAccountFactory(api_key=key, status=AccountStatus.DISCONNECTED)

    found = dict(selectors.accounts_needing_attention(api_key=key, now=NOW))
    assert set(found) == {refused, failing, idle}
    assert fine not in found
    assert "refresh token" in found[refused].lower()
    assert "3 token refresh" in found[failing]
    assert "idle 151 days" in found[idle]


def test_one_status_wording_for_every_page():
    assert ConnectedAccountFactory().health().label == "Connected"
    refused = ConnectedAccountFactory(status=AccountStatus.NEEDS_RECONNECT)
    assert (refused.health().code, refused.health().label) == ("needs_reconnect", "Needs reconnect")
    assert refused.health().attention


def test_the_migration_fills_the_hourly_rollup_from_recorded_calls():
    key = ApiKeyFactory()
    account = ConnectedAccountFactory(api_key=key)
    _call(key, account, NOW)
    _call(key, account, NOW, status=500)
    HourlyUsage.objects.all().delete()

    migration = importlib.import_module("integrations.migrations.0009_hourly_usage")
    migration.hourly_usage_backfill(apps, SimpleNamespace(connection=connection))
    row = HourlyUsage.objects.get()
    assert (row.account_id, row.hour, row.calls, row.errors) == (
        account.pk,
        NOW.replace(minute=0, second=0),
        2,
        1,
    )

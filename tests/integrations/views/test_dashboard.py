"""The dashboard's figures come from the same selector as ``cc_usage``."""

from __future__ import annotations

import datetime as dt
import io
import json
import re

import pytest
from django.core.management import call_command
from django.urls import reverse

from integrations.models import AccountStatus, CallKind
from integrations.services.audit import api_call_record
from tests.factories import ApiKeyFactory, ConnectedAccountFactory

pytestmark = pytest.mark.django_db


def test_calls_today_on_the_dashboard_equal_cc_usage_and_leave_token_calls_out(staff_client):
    key = ApiKeyFactory(name="Shared key")
    for status in (200, 200, 429):
        api_call_record(
            api_key=key, account=None, method="GET", path_template="/contacts", status_code=status
        )
    for _ in range(2):
        api_call_record(
            api_key=key,
            account=None,
            method="POST",
            path_template="/oauth2/default/v1/token",
            status_code=200,
            kind=CallKind.TOKEN,
        )
    out = io.StringIO()
    call_command("cc_usage", "--json", stdout=out)
    (usage,) = json.loads(out.getvalue())
    page = staff_client.get(reverse("integrations:dashboard")).content.decode()
    assert usage["calls_today"] == 3
    assert _figure(page, "calls-today") == usage["calls_today"]
    assert _figure(page, "remaining-today") == usage["remaining_today"]


def _figure(page: str, name: str) -> int:
    shown = re.search(rf'data-{name}="(\d+)"', page)
    assert shown, f"no {name} on the page"
    return int(shown.group(1))


def _record(key, account=None, *, status=200, error_key="", at=None):
    api_call_record(
        api_key=key,
        account=account,
        method="GET",
        path_template="/contacts",
        status_code=status,
        error_key=error_key,
        at=at,
    )


def test_the_panel_explains_the_reserve_and_marks_the_reset(staff_client, settings):
    settings.CC_QUOTA_INTERACTIVE_RESERVE = 0.05
    key = ApiKeyFactory(tier="custom", custom_per_second=2, custom_per_day=3054)
    page = staff_client.get(reverse("integrations:key_panel", args=[key.pk])).content.decode()
    # The ledger's figures: 5% of 3,054 rounded up is kept, so background work stops at 2,901.
    assert "Background jobs (syncs) stop at 2,901 calls" in page
    assert "the last 153 of the day are kept for people" in page
    assert re.search(r'<time datetime="[^"]+T00:00:00\+00:00" data-local-time>00:00 UTC', page)
    assert 'role="img"' in page and "Calls per minute, last hour" in page
    assert 'class="visually-hidden"' in page  # the charts' figures as text
    assert "0 — healthy" in page


def test_429s_are_red_with_a_link_to_those_calls(staff_client):
    key = ApiKeyFactory()
    _record(key, status=429, error_key="throttled")
    page = staff_client.get(reverse("integrations:key_panel", args=[key.pk])).content.decode()
    assert f'href="/calls/?key={key.pk}&amp;status=429"' in page
    assert "1 (1 throttled, 0 quota)" in page


def test_over_the_quota_is_said_plainly(staff_client):
    key = ApiKeyFactory(tier="custom", custom_per_second=1, custom_per_day=3)
    for _ in range(5):
        _record(key)
    page = staff_client.get(reverse("integrations:key_panel", args=[key.pk])).content.decode()
    assert "2 calls over the daily quota" in page
    assert 'class="fill bad"' in page


def test_per_account_breakdown_attention_and_polling(staff_client):
    key = ApiKeyFactory()
    busy = ConnectedAccountFactory(api_key=key, label="busy@example.com")
    ConnectedAccountFactory(
        api_key=key, label="refused@example.com", status=AccountStatus.NEEDS_RECONNECT
    )
    _record(key, busy)
    page = staff_client.get(reverse("integrations:dashboard")).content.decode()
    assert "busy@example.com</a></td><td>1</td>" in page
    assert "refused@example.com</a>:" in page
    assert f'hx-get="/keys/{key.pk}/panel/" hx-trigger="every 5s"' in page


def test_a_dashboard_without_keys_says_how_to_add_one(staff_client):
    page = staff_client.get(reverse("integrations:dashboard")).content.decode()
    assert "No API keys yet" in page and "cc_key add" in page


def test_chart_labels_keep_inside_the_chart_and_clear_of_each_other():
    from integrations.charts import _tick_positions, calls_per_day

    assert _tick_positions(30, every=7) == [0, 7, 14, 21, 29]
    assert _tick_positions(60, every=15) == [0, 15, 30, 45, 59]
    assert _tick_positions(1, every=7) == [0]
    start = dt.date(2026, 11, 4)
    series = [(start + dt.timedelta(days=i), i) for i in range(30)]
    svg = str(calls_per_day(series, per_day=100, chart_id="days"))
    assert 'text-anchor="start">Nov 4<' in svg
    assert 'text-anchor="end">Dec 3<' in svg
    assert ">Dec 2<" not in svg

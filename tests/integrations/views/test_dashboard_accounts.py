"""The key panel's per-account table: each account's share of the key, cap, weight and slot
waits beside its calls today, the same figures ``cc_usage`` prints."""

from __future__ import annotations

import io
import json
import re

import pytest
from django.core.management import call_command
from django.urls import reverse

from integrations.models import Lane
from integrations.services.audit import api_call_record
from integrations.services.quota import AccountCapReached, quota_reserve
from tests.factories import ApiKeyFactory, ConnectedAccountFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def ledger(settings):
    """The database ledger, with every account's weight and cap read as the test set them."""
    settings.CC_QUOTA_STORE = "integrations.services.quota_stores.DatabaseStore"
    settings.CC_QUOTA_ACCOUNT_REFRESH = 0.0


def call(key, account, *, wait_ms: int = 0, status: int = 200) -> None:
    """One background call as the gateway makes it: booked in the ledger, then logged."""
    quota_reserve(api_key=key, lane=Lane.BACKGROUND, account=account)
    api_call_record(
        api_key=key,
        account=account,
        method="GET",
        path_template="/contacts",
        status_code=status,
        slot_wait_ms=wait_ms,
        lane=Lane.BACKGROUND,
    )


def panel(client, key) -> str:
    return client.get(reverse("integrations:key_panel", args=[key.pk])).content.decode()


def account_row(page: str, name: str) -> str:
    """The table row of the account named ``name``."""
    found = re.search(rf"<tr><td><a [^>]*>{re.escape(name)}</a></td>.*?</tr>", page, re.S)
    assert found, f"no row for {name}"
    return found.group(0)


@pytest.fixture
def shared_key():
    key = ApiKeyFactory(tier="custom", custom_per_second=1000, custom_per_day=1000)
    busy = ConnectedAccountFactory(api_key=key, label="busy@example.com", share_weight=3)
    capped = ConnectedAccountFactory(api_key=key, label="capped@example.com", daily_cap=2)
    for wait in (1200, 30, 80):
        call(key, busy, wait_ms=wait)
    call(key, capped, wait_ms=5, status=500)
    call(key, capped, wait_ms=7)
    with pytest.raises(AccountCapReached):
        quota_reserve(api_key=key, lane=Lane.BACKGROUND, account=capped)
    return key


def test_each_account_shows_share_cap_weight_and_slot_waits(staff_client, shared_key):
    page = panel(staff_client, shared_key)

    busy = account_row(page, "busy@example.com")
    assert "<td>3</td><td>0</td>" in busy  # calls and errors, as before
    assert re.search(r'data-share="0\.6000">60% share<', busy)
    assert '<span class="weight" data-weight="3">weight 3</span>' in busy
    assert '<span class="cap muted">no cap</span>' in busy
    assert "wait p50 80 · p95 1,200 ms" in busy
    capped = account_row(page, "capped@example.com")
    assert "<td>2</td><td>1</td>" in capped
    assert re.search(r'data-share="0\.4000">40% share<', capped)
    assert 'data-weight="1">weight 1<' in capped
    assert "wait p50 5 · p95 7 ms" in capped


def test_a_reached_cap_is_highlighted_in_words_and_colour(staff_client, shared_key):
    page = panel(staff_client, shared_key)

    assert '<strong class="cap bad" data-cap-remaining="0">cap 2 reached</strong>' in account_row(
        page, "capped@example.com"
    )
    assert "reached" not in account_row(page, "busy@example.com")


def test_a_cap_with_room_left_says_how_much(staff_client):
    key = ApiKeyFactory(tier="custom", custom_per_second=1000, custom_per_day=1000)
    account = ConnectedAccountFactory(api_key=key, label="roomy@example.com", daily_share=0.5)
    call(key, account)

    row = account_row(panel(staff_client, key), "roomy@example.com")

    assert '<span class="cap" data-cap-remaining="499">cap 500 · 499 left</span>' in row


def test_screen_readers_hear_the_waits_and_share_in_words(staff_client, shared_key):
    busy = account_row(panel(staff_client, shared_key), "busy@example.com")

    assert '<span aria-hidden="true">wait p50 80 · p95 1,200 ms</span>' in busy
    assert (
        '<span class="visually-hidden">slot wait: median 80 ms, 95th percentile 1,200 ms</span>'
        in busy
    )
    assert '60% share<span class="visually-hidden"> of the key\'s calls today</span>' in busy


def test_the_panel_agrees_with_cc_usage(staff_client, shared_key):
    out = io.StringIO()
    call_command("cc_usage", "--json", "--key", shared_key.client_id, stdout=out)
    [summary] = json.loads(out.getvalue())
    page = panel(staff_client, shared_key)

    for row in summary["accounts"]:
        shown = account_row(page, row["name"])
        assert f'data-share="{row["share"]:.4f}"' in shown
        assert f'data-weight="{row["weight"]}"' in shown
        assert f'data-cap-remaining="{row["cap_remaining"]}"' in shown or row["cap"] is None
        assert f"wait p50 {row['slot_wait_p50_ms']:,} · p95 {row['slot_wait_p95_ms']:,} ms" in shown


def test_calls_for_no_account_have_no_share_of_their_own(staff_client):
    key = ApiKeyFactory()
    api_call_record(
        api_key=key, account=None, method="GET", path_template="/contacts", status_code=200
    )

    page = panel(staff_client, key)

    assert re.search(
        r"no account \(Connect\)</span></td><td>1</td><td>0</td>\s*"
        r'<td class="key-part"><span class="muted">—</span></td>',
        page,
    )


def test_the_dashboard_shows_the_table_for_every_key(staff_client, shared_key):
    other = ApiKeyFactory(name="Quiet key")
    page = staff_client.get(reverse("integrations:dashboard")).content.decode()

    assert "wait p50 80 · p95 1,200 ms" in page
    assert '<th scope="col">Part of the key</th>' in page
    quiet = page[page.index(f'id="key-{other.pk}"') :]
    assert "No calls yet today." in quiet


def test_without_the_ledger_the_panel_still_shows_the_calls(staff_client, shared_key, settings):
    settings.CC_QUOTA_STORE = "integrations.services.quota_stores.RedisStore"
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens there

    response = staff_client.get(reverse("integrations:key_panel", args=[shared_key.pk]))

    assert response.status_code == 200
    page = response.content.decode()
    assert "<td>3</td><td>0</td>" in account_row(page, "busy@example.com")
    assert "ledger unavailable" in page
    assert "The quota ledger does not answer" in page

"""The dashboard as an operator watches it: the figures are `cc_usage --json`'s, and the panel
follows new calls by itself, without a reload."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command

from integrations.services.gateway import cc_call

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def usage_of(client_id: str) -> dict:
    out = StringIO()
    call_command("cc_usage", "--json", stdout=out)
    return next(row for row in json.loads(out.getvalue()) if row["key"] == client_id)


def calls(account, count: int) -> None:
    for _ in range(count):
        cc_call(account=account, method="GET", path="/contact_lists")


def test_dashboard_equals_cc_usage_and_moves_without_reload(
    logged_in_page, live_server, connected_account, screenshot
):
    key = connected_account.api_key
    calls(connected_account, 3)
    page = logged_in_page

    page.goto(f"{live_server.url}/")
    panel = page.locator(f"#key-{key.pk}")
    usage = usage_of(key.client_id)
    assert usage["calls_today"] >= 3
    today = panel.locator(".calls-today")
    assert today.get_attribute("data-calls-today") == str(usage["calls_today"])
    left = panel.locator(".remaining-today").get_attribute("data-remaining-today")
    assert left == str(usage["remaining_today"])
    assert "0 — healthy" in panel.locator(".four-twenty-nines").inner_text()
    minutes_chart = panel.locator(".charts figure").first.inner_html()
    screenshot(page, "dashboard")

    page.evaluate("window.__sameDocument = true")
    calls(connected_account, 4)
    expected = usage["calls_today"] + 4
    page.wait_for_function(
        "([pk, n]) => document.querySelector(`#key-${pk} .calls-today`).dataset.callsToday == n",
        arg=[key.pk, str(expected)],
        timeout=30_000,
    )

    assert page.evaluate("window.__sameDocument") is True, "the panel updated in place"
    assert usage_of(key.client_id)["calls_today"] == expected
    panel = page.locator(f"#key-{key.pk}")
    assert panel.locator(".charts figure").first.inner_html() != minutes_chart
    by_account = panel.locator(".panel-columns table").inner_text()
    assert str(expected) in by_account

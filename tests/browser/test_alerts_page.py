"""The alerts page fits a phone: at 390 px, with destinations and a delivery log, nothing
scrolls sideways."""

from __future__ import annotations

import pytest

from integrations.models import AlertEventType
from integrations.services.alerts import (
    alert_deliveries_send,
    alert_email_add,
    alert_event_emit,
    alert_webhook_add,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_the_alerts_page_fits_390_px(logged_in_page, live_server, screenshot):
    alert_webhook_add(
        url="http://127.0.0.1:9/a/rather/long/path/for/a/webhook/receiver?token=abcdef",
        secret="browser-secret-0123456789",
        events="quota.threshold,quota.forecast,job.failed,account.needs_reconnect",
    )
    alert_email_add(address="operations-team-with-a-long-name@example.com")
    alert_event_emit(
        event_type=AlertEventType.QUOTA_THRESHOLD,
        dedupe_key="quota.threshold:1:2026-01-01:90",
        data={"message": "Key Main has used 9,000 of its 10,000 calls today (90% reached)."},
    )
    alert_deliveries_send()
    page = logged_in_page
    page.set_viewport_size({"width": 390, "height": 844})

    page.goto(f"{live_server.url}/alerts/")
    page.wait_for_load_state("networkidle")
    screenshot(page, "phone-alerts")

    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
    assert page.locator("#deliveries").is_visible()
    assert page.locator("#alert-add").is_visible()

"""An operator adds a webhook on the alerts page; when CC refuses an account's refresh token the
receiver gets one signed `account.needs_reconnect`, and the page shows it delivered."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.utils import timezone

from integrations.models import AccountStatus, ConnectedAccount
from integrations.services.alert_rules import alerts_evaluate
from integrations.services.alerts import alert_deliveries_send, signature_valid
from integrations.services.gateway import cc_call
from integrations.services.tokens import AccountNotConnected
from tests.integrations.services.alert_receiver import Receiver

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SECRET = "whsec-browser-0123456789abcdef"


def test_needs_reconnect_reaches_a_signed_webhook(
    logged_in_page, live_server, cc_app, connected_account, screenshot
):
    page = logged_in_page
    with Receiver() as receiver:
        page.goto(f"{live_server.url}/alerts/")
        page.select_option("#id_kind", "webhook")
        page.fill("#id_target", receiver.url)
        page.fill("#id_secret", SECRET)
        page.check("input[name=events][value='account.needs_reconnect']")
        page.click("#alert-add button[type=submit]")
        page.wait_for_selector("#destinations")
        assert receiver.url in page.inner_text("#destinations")
        assert SECRET not in page.content()

        # The access token has run out and CC refuses the refresh token.
        ConnectedAccount.objects.filter(pk=connected_account.pk).update(
            access_expires_at=timezone.now() - dt.timedelta(minutes=1)
        )
        cc_app.sandbox.inject_token_fault("invalid_grant", client_id=cc_app.api_key.client_id)
        with pytest.raises(AccountNotConnected):
            cc_call(account=connected_account, method="GET", path="/contact_lists")
        connected_account.refresh_from_db()
        assert connected_account.status == AccountStatus.NEEDS_RECONNECT

        for _ in range(3):  # the worker's evaluator runs again and again: still one webhook
            alerts_evaluate()
            alert_deliveries_send()

        (request,) = receiver.requests
        body = json.loads(request.body)
        assert body["event"] == "account.needs_reconnect"
        assert body["data"]["account"]["id"] == connected_account.pk
        assert signature_valid(SECRET, request.headers["X-CCPortal-Signature"], request.body)
        assert not signature_valid(
            "another-secret-0123456789", request.headers["X-CCPortal-Signature"], request.body
        )

    page.goto(f"{live_server.url}/alerts/")
    row = page.locator("#deliveries tbody tr").first
    assert "account.needs_reconnect" in row.inner_text()
    assert "Delivered" in row.inner_text()
    screenshot(page, "alerts")

    page.goto(f"{live_server.url}/accounts/{connected_account.pk}/")
    assert "Needs reconnect" in page.inner_text("#account-status")

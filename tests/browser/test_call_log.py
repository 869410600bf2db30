"""Investigating in the call log: filter to the failures, open one, read CC's answer."""

from __future__ import annotations

import pytest

from integrations.constant_contact.errors import CCHTTPError
from integrations.models import ApiCall
from integrations.services.gateway import cc_call

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_filter_the_log_to_client_errors_and_open_one(
    logged_in_page, live_server, connected_account, screenshot
):
    for _ in range(3):
        cc_call(account=connected_account, method="GET", path="/contact_lists")
    with pytest.raises(CCHTTPError):
        cc_call(
            account=connected_account,
            method="GET",
            path="/contacts/00000000-0000-0000-0000-000000000000",
        )
    missing = ApiCall.objects.get(status_code=404)
    page = logged_in_page

    page.goto(f"{live_server.url}/calls/")
    assert page.locator("#calls tbody tr").count() == ApiCall.objects.count()
    assert page.locator(f"tr[data-call='{missing.pk}']").get_attribute("class") == "error-row"
    screenshot(page, "call-log")

    page.fill("#id_status", "4xx")
    page.click("#call-filters button[type=submit]")
    page.wait_for_url("**/calls/?*status=4xx*")
    rows = page.locator("#calls tbody tr")
    # Exactly the client errors: the 404, and a 429 if a loaded machine made CC throttle one.
    client_errors = ApiCall.objects.filter(status_code__gte=400, status_code__lt=500)
    shown = {rows.nth(n).get_attribute("data-call") for n in range(rows.count())}
    assert shown == {str(pk) for pk in client_errors.values_list("pk", flat=True)}
    assert str(missing.pk) in shown

    page.locator(f"tr[data-call='{missing.pk}'] a").first.click()
    page.wait_for_url(f"{live_server.url}/calls/{missing.pk}/")
    assert page.inner_text("#call-status").startswith("404")
    detail = page.inner_text("#error-detail")
    assert "not found" in detail.lower()
    assert "Bearer" not in page.content()
    screenshot(page, "call-detail")

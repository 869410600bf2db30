from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def test_login_reaches_dashboard_and_admin_lists_models(logged_in_page, live_server):
    page = logged_in_page
    assert page.locator("h1").inner_text() == "Dashboard"
    page.goto(f"{live_server.url}/admin/")
    body = page.locator("body").inner_text()
    for name in ("API keys", "Connected accounts", "API calls", "Daily usage", "Bulk jobs"):
        assert name in body

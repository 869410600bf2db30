"""Every page fits a phone: at 390 px nothing scrolls sideways, and the nav collapses."""

from __future__ import annotations

import pytest

from integrations.models import ApiCall
from integrations.services.bulk_jobs import bulk_job_create
from integrations.services.gateway import cc_call

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PHONE = {"width": 390, "height": 844}


def overflow(page) -> int:
    """How many CSS pixels the page is wider than the viewport."""
    return page.evaluate("document.documentElement.scrollWidth - window.innerWidth")


def test_every_page_fits_390_px(logged_in_page, live_server, cc_app, connected_account, screenshot):
    cc_call(account=connected_account, method="GET", path="/contact_lists")
    call = ApiCall.objects.filter(kind="api").latest("pk")
    list_id = cc_app.lists[0].list_id
    job = bulk_job_create(
        account=connected_account,
        list_id=list_id,
        mode="replace",
        csv_chunks=iter([b"email,first_name\nann@example.com,Ann\n"]),
    )
    page = logged_in_page
    page.set_viewport_size(PHONE)
    pages = {
        "dashboard": "/",
        "accounts": "/accounts/",
        "account": f"/accounts/{connected_account.pk}/",
        "sync-form": f"/accounts/{connected_account.pk}/lists/{list_id}/sync/",
        "jobs": "/jobs/",
        "job": f"/jobs/{job.pk}/",
        "calls": "/calls/",
        "call": f"/calls/{call.pk}/",
        "not-found": "/no-such-page/",
    }
    too_wide = {}
    for name, path in pages.items():
        page.goto(f"{live_server.url}{path}")
        page.wait_for_load_state("networkidle")
        if overflow(page) > 0:
            too_wide[name] = overflow(page)
        screenshot(page, f"phone-{name}")
    assert too_wide == {}, f"pages wider than 390 px (by px): {too_wide}"

    page.goto(f"{live_server.url}/")
    assert page.locator("#site-nav a:visible").count() == 0, "the nav is collapsed"
    page.click(".nav-toggle")
    assert page.locator("#site-nav a:visible").count() >= 4, "the toggle opens the nav"
    assert page.get_attribute(".nav-toggle", "aria-expanded") == "true"


def test_the_login_page_fits_390_px(page, live_server, transactional_db):
    page.set_viewport_size(PHONE)
    page.goto(f"{live_server.url}/login/")
    assert overflow(page) <= 0

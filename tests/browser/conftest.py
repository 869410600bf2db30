"""Browser tests: Playwright driving Debian's chromium against pytest-django's live server."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser():
    executable = shutil.which("chromium")
    if executable is None:
        message = "Debian's chromium is not installed (make test installs it)"
        if os.environ.get("CCPORTAL_REQUIRE_BROWSER"):
            pytest.fail(message + "; CI requires the browser tests")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; Django's async-unsafe guard must
    # allow the ORM calls the tests make beside it. Only for the browser tests.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser):
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def logged_in_page(page, live_server, transactional_db):
    from django.core.cache import cache

    from tests.factories import StaffFactory

    # Every browser test logs in from 127.0.0.1 as the same user: start each with fresh login
    # counters, or the limiter (5 a minute per username) refuses the sixth test's login.
    cache.clear()
    StaffFactory(username="browser-admin", password="browser-pw-123")
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", "browser-admin")
    page.fill("#id_password", "browser-pw-123")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    return page


#: Where the browser tests save their screenshots (the README's pictures come from here).
SCREENSHOTS = Path(
    os.environ.get(
        "CCPORTAL_SCREENSHOTS", Path(__file__).resolve().parents[2] / "var" / "screenshots"
    )
)


@pytest.fixture
def screenshot():
    """``screenshot(page, "name")`` saves a full-page PNG as ``SCREENSHOTS/name.png``."""

    def save(page, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save

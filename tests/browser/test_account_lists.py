"""A person refreshes an account's list counts: the card is read from CC again in place."""

from __future__ import annotations

import pytest

from integrations.models import ApiCall

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_refresh_rereads_the_counts_in_place_and_says_as_of_when(
    logged_in_page, live_server, cc_app, connected_account
):
    page = logged_in_page
    account_url = f"{live_server.url}/accounts/{connected_account.pk}/"
    page.goto(account_url)
    page.wait_for_selector("#lists-as-of time[data-localised]")
    assert "your time" in page.inner_text("#lists-as-of"), "portal.js adds the local time"
    assert page.inner_text("#account-lists tbody tr:first-child td:nth-child(2)") == "0"

    newsletter = cc_app.lists[0]
    cc_app.sandbox.seed_contacts(cc_app.cc_account, count=2, list_ids=[newsletter.list_id])
    page.click("#lists-refresh")
    page.wait_for_function(
        "() => document.querySelector('#account-lists tbody tr td:nth-child(2)').innerText === '2'"
    )
    assert page.url == account_url, "refreshed in place"
    page.wait_for_selector("#lists-as-of time[data-localised]")
    assert ApiCall.objects.filter(path_template="/contact_lists").count() == 2

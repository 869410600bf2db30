"""A person connects a CC account: Connect → the sandbox's consent page → Allow → account page."""

from __future__ import annotations

import pytest

from integrations.models import ConnectedAccount
from integrations.services import jwt as jwt_service
from integrations.services.keys import api_key_create

pytestmark = pytest.mark.browser


def test_connect_button_to_connected_account_page(logged_in_page, live_server, cc_sandbox):
    jwt_service.jwks_cache_clear()
    redirect_uri = f"{live_server.url}/accounts/callback/"
    cc_sandbox.register_client(
        "browser-app", redirect_uris=[redirect_uri], client_secret="browser-secret"
    )
    cc_sandbox.create_account("browser-owner@example.com", name="Browser Owner")
    key = api_key_create(
        name="Browser app",
        client_id="browser-app",
        client_secret="browser-secret",
        redirect_uri=redirect_uri,
    )
    page = logged_in_page

    page.goto(f"{live_server.url}/accounts/")
    page.click(f"#connect-{key.pk}")
    page.wait_for_url(f"{cc_sandbox.url}/oauth2/default/v1/authorize*")
    page.click("#allow")
    page.wait_for_url(f"{live_server.url}/accounts/*/")

    account = ConnectedAccount.objects.get()
    assert page.url == f"{live_server.url}/accounts/{account.pk}/"
    assert "code=" not in page.url
    assert "Connected" in page.locator("#account-status").inner_text()
    owner = cc_sandbox.create_account("browser-owner@example.com")  # returns the existing one
    assert account.cc_user_id == owner.sub
    assert owner.sub in page.locator("body").inner_text()
    heading = page.locator("h1").inner_text()
    assert heading == "Browser Owner's organization (browser-owner@example.com)"

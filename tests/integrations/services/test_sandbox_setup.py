"""Preparing a freshly started sandbox for the portal, as ``make run`` does."""

from __future__ import annotations

import pytest
import requests

from integrations.models import ApiKey
from integrations.sandbox.control import SandboxControl
from integrations.services.sandbox_setup import SandboxNotReady, sandbox_prepare_for_portal


@pytest.mark.django_db
def test_prepare_for_portal_creates_the_key_once_and_registers_it(cc_sandbox: SandboxControl):
    portal = "http://127.0.0.1:8000"
    line = sandbox_prepare_for_portal(sandbox_url=cc_sandbox.url, portal_url=portal)
    key = ApiKey.objects.get(client_id="sandbox-client")
    assert (key.name, key.redirect_uri, key.tier) == (
        "Sandbox app",
        f"{portal}/accounts/callback/",
        "standard",
    )
    secret = key.client_secret
    assert secret and secret not in line
    assert "\n" not in line
    assert "demo@example.com" in line

    cc_sandbox.reset()  # as if the sandbox restarted
    sandbox_prepare_for_portal(sandbox_url=cc_sandbox.url, portal_url=portal)
    assert ApiKey.objects.get(client_id="sandbox-client").client_secret == secret
    # The sandbox knows the same secret: a bogus refresh is invalid_grant, not invalid_client.
    refresh = requests.post(
        cc_sandbox.token_url,
        data={"grant_type": "refresh_token", "refresh_token": "nope"},
        auth=("sandbox-client", secret),
        timeout=5,
    )
    assert refresh.json()["error"] == "invalid_grant"
    code = cc_sandbox.authorize(
        "sandbox-client", f"{portal}/accounts/callback/", "contact_data offline_access", "st"
    )
    assert code
    summary = cc_sandbox.account("demo@example.com")
    assert len(summary["contact_lists"]) == 3 and summary["contacts"] > 200


def test_a_sandbox_that_does_not_answer_is_named(monkeypatch):
    monkeypatch.setattr("integrations.services.sandbox_setup.SANDBOX_WAIT_SECONDS", 0.2)
    with pytest.raises(SandboxNotReady, match=r"127\.0\.0\.1:9"):
        sandbox_prepare_for_portal(sandbox_url="http://127.0.0.1:9", portal_url="http://x")

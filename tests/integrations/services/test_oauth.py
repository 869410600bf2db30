"""The connect flow against the live sandbox: state, PKCE, identity, reconnect, disconnect."""

from __future__ import annotations

import logging
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client
from django.urls import reverse

from integrations.constant_contact.errors import CCForbidden
from integrations.models import AccountStatus, ApiCall, CallKind, ConnectedAccount
from integrations.services import oauth
from integrations.services.oauth import (
    AccountSwitchNeedsConfirmation,
    ConnectDenied,
    ConnectError,
    account_disconnect,
    connect_complete,
    connect_start,
)
from tests.factories import ConnectedAccountFactory, StaffFactory
from tests.fixtures.portal import REDIRECT_URI, make_cc_app

pytestmark = pytest.mark.django_db(transaction=True)


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def _token_requests(cc_app) -> int:
    return cc_app.sandbox.stats(cc_app.api_key.client_id).token_requests


def test_confidential_app_connects_with_basic_auth_and_no_pkce(cc_app):
    session: dict = {}
    url = connect_start(session=session, api_key=cc_app.api_key)
    query = _query(url)
    assert url.startswith(cc_app.sandbox.authorize_url + "?")
    assert query["redirect_uri"] == REDIRECT_URI
    assert query["scope"].split() == ["contact_data", "account_read", "offline_access"]
    assert len(query["state"]) >= 22  # 128+ bits, url-safe base64
    assert "code_challenge" not in query

    account = cc_app.connect()
    assert account.status == AccountStatus.ACTIVE
    assert account.cc_user_id == cc_app.cc_account.sub
    assert account.platform_user_id == cc_app.cc_account.platform_user_id
    assert set(account.scopes) >= {"contact_data", "account_read", "offline_access"}
    assert account.refresh_token and account.access_token
    assert account.access_expires_at is not None
    assert _token_requests(cc_app) == 1
    assert ApiCall.objects.filter(kind=CallKind.TOKEN, status_code=200).count() == 1


def test_public_app_uses_pkce_and_client_id_without_secret(cc_sandbox, transactional_db):
    app = make_cc_app(cc_sandbox, client_id="public-app", public=True)
    assert app.api_key.use_pkce
    session: dict = {}
    query = _query(connect_start(session=session, api_key=app.api_key))
    assert query["code_challenge_method"] == "S256"
    verifier = next(iter(session[oauth.SESSION_KEY].values()))["verifier"]
    assert verifier and verifier not in query.values()
    account = app.connect()
    assert account.is_active and account.refresh_token


def test_wrong_pkce_verifier_is_refused_by_cc(cc_sandbox, transactional_db):
    app = make_cc_app(cc_sandbox, client_id="public-app-2", public=True)
    session: dict = {}
    query = _query(connect_start(session=session, api_key=app.api_key))
    code = cc_sandbox.authorize(
        app.api_key.client_id,
        query["redirect_uri"],
        query["scope"],
        query["state"],
        code_challenge=query["code_challenge"],
    )
    entry = session[oauth.SESSION_KEY][query["state"]]
    entry["verifier"] = "x" * 60
    with pytest.raises(ConnectError, match="refused the authorization code"):
        connect_complete(session=session, params={"code": code, "state": query["state"]})
    assert not ConnectedAccount.objects.exists()


@pytest.mark.parametrize("case", ["missing", "wrong", "replayed", "expired", "other_session"])
def test_bad_state_is_refused_with_400_before_any_token_call(cc_app, case, settings):
    staff = StaffFactory()
    browser, other = Client(), Client()
    browser.force_login(staff)
    other.force_login(staff)
    response = browser.post(reverse("integrations:connect", args=[cc_app.api_key.pk]))
    query = _query(response["Location"])
    code = cc_app.sandbox.authorize(
        cc_app.api_key.client_id, query["redirect_uri"], query["scope"], query["state"]
    )
    callback = reverse("integrations:connect_callback")
    state = query["state"]
    if case == "replayed":
        assert browser.get(callback, {"code": code, "state": state}).status_code == 302
        assert _token_requests(cc_app) == 1
    before = _token_requests(cc_app)
    calls_before = ApiCall.objects.count()

    if case == "missing":
        response = browser.get(callback, {"code": code})
    elif case == "wrong":
        response = browser.get(callback, {"code": code, "state": state[:-4] + "AAAA"})
    elif case == "replayed":
        response = browser.get(callback, {"code": code, "state": state})
    elif case == "expired":
        settings.CC_OAUTH_STATE_LIFETIME = 0
        time.sleep(0.01)
        response = browser.get(callback, {"code": code, "state": state})
    else:
        response = other.get(callback, {"code": code, "state": state})

    assert response.status_code == 400
    assert _token_requests(cc_app) == before
    assert ApiCall.objects.count() == calls_before
    assert code not in response.content.decode()


def test_access_denied_becomes_a_friendly_message(cc_app, client):
    client.force_login(StaffFactory())
    query = _query(
        client.post(reverse("integrations:connect", args=[cc_app.api_key.pk]))["Location"]
    )
    answer = cc_app.sandbox.deny(
        cc_app.api_key.client_id, query["redirect_uri"], query["scope"], query["state"]
    )
    assert answer["error"] == "access_denied"
    response = client.get(reverse("integrations:connect_callback"), answer, follow=True)
    assert "access was denied" in response.content.decode()
    assert _token_requests(cc_app) == 0


def test_callback_redirects_to_account_page_without_code_in_url(cc_app, client):
    client.force_login(StaffFactory())
    query = _query(
        client.post(reverse("integrations:connect", args=[cc_app.api_key.pk]))["Location"]
    )
    code = cc_app.sandbox.authorize(
        cc_app.api_key.client_id, query["redirect_uri"], query["scope"], query["state"]
    )
    response = client.get(
        reverse("integrations:connect_callback"), {"code": code, "state": query["state"]}
    )
    account = ConnectedAccount.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("integrations:account_detail", args=[account.pk])
    page = client.get(response["Location"]).content.decode()
    assert "Connected" in page and cc_app.cc_account.sub in page


def test_forged_host_header_does_not_change_the_redirect_uri(cc_app, client, settings):
    settings.ALLOWED_HOSTS = ["*"]
    client.force_login(StaffFactory())
    response = client.post(
        reverse("integrations:connect", args=[cc_app.api_key.pk]), HTTP_HOST="evil.example"
    )
    assert _query(response["Location"])["redirect_uri"] == REDIRECT_URI


def test_reconnecting_the_same_cc_account_updates_it(cc_app):
    first = cc_app.connect()
    second = cc_app.connect()
    assert first.pk == second.pk
    assert ConnectedAccount.objects.count() == 1
    assert second.token_version > first.token_version


# --- naming the account from CC's account summary ------------------------------------------
def _summary_calls() -> list[ApiCall]:
    return list(ApiCall.objects.filter(path_template="/account/summary").order_by("pk"))


def test_connect_names_the_account_from_one_booked_summary_call(cc_app):
    account = cc_app.connect()
    stored = ConnectedAccount.objects.get(pk=account.pk)
    assert stored.organization_name == "Example Owner's organization"
    assert stored.login_email == "owner@example.com"
    assert str(stored) == "Example Owner's organization (owner@example.com)"
    assert [(c.method, c.status_code, c.kind) for c in _summary_calls()] == [
        ("GET", 200, CallKind.API)
    ]
    by_path = cc_app.sandbox.stats(cc_app.api_key.client_id).by_path
    assert sum(by_path["GET /v3/account/summary"].values()) == 1, "one call, and CC saw it"


def test_reconnect_reads_the_names_again(cc_app):
    account = cc_app.connect()
    ConnectedAccount.objects.filter(pk=account.pk).update(
        organization_name="Old name", login_email="old@example.com"
    )
    session: dict = {}
    query = _query(connect_start(session=session, api_key=cc_app.api_key, reconnect=account))
    code = cc_app.sandbox.authorize(
        cc_app.api_key.client_id, query["redirect_uri"], query["scope"], query["state"]
    )
    result = connect_complete(session=session, params={"code": code, "state": query["state"]})
    stored = ConnectedAccount.objects.get(pk=account.pk)
    assert result.account.pk == account.pk and not result.created
    assert (stored.organization_name, stored.login_email) == (
        "Example Owner's organization",
        "owner@example.com",
    )
    assert len(_summary_calls()) == 2


def test_a_summary_cc_cannot_give_still_connects_with_the_user_id_as_name(
    cc_app, monkeypatch, caplog
):
    from integrations.services import gateway

    monkeypatch.setattr(gateway, "BACKOFF_BASE", 0.0)
    cc_app.sandbox.inject_api_fault(
        500, count=gateway.MAX_ATTEMPTS, path="/v3/account/summary", method="GET"
    )
    caplog.set_level(logging.WARNING, logger="integrations.services.oauth")
    account = cc_app.connect()
    stored = ConnectedAccount.objects.get(pk=account.pk)
    assert stored.is_active and stored.refresh_token
    assert (stored.organization_name, stored.login_email) == ("", "")
    assert str(stored) == cc_app.cc_account.sub
    warnings = [r.getMessage() for r in caplog.records if r.name == "integrations.services.oauth"]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "Could not read the account summary" in warnings[0] and "500" in warnings[0]
    assert stored.access_token not in warnings[0]
    assert {c.status_code for c in _summary_calls()} == {500}, "every attempt is in the log"


def test_names_are_not_asked_for_without_account_read(fake_cc, caplog):
    account = ConnectedAccountFactory(scopes=["contact_data", "offline_access"])
    caplog.set_level(logging.WARNING, logger="integrations.services.oauth")
    assert oauth.account_names_refresh(account=account) is False
    assert fake_cc.calls == []
    assert "not granted account_read" in caplog.text
    assert str(account) == account.label


def test_names_update_only_their_columns_and_a_refusal_keeps_the_old_ones(fake_cc):
    account = ConnectedAccountFactory(scopes=["contact_data", "account_read"])
    # A token refresh elsewhere moves the row on after this copy was loaded.
    ConnectedAccount.objects.filter(pk=account.pk).update(token_version=7)
    fake_cc.answer(
        "GET",
        "/account/summary",
        {"organization_name": "Acme", "contact_email": "ops@acme.example"},
        times=1,
    )
    fake_cc.answer(
        "GET",
        "/account/summary",
        raises=CCForbidden(status=403, method="GET", path="/account/summary"),
    )
    assert oauth.account_names_refresh(account=account) is True
    stored = ConnectedAccount.objects.get(pk=account.pk)
    assert (stored.organization_name, stored.login_email, stored.token_version) == (
        "Acme",
        "ops@acme.example",
        7,
    )
    assert str(account) == "Acme (ops@acme.example)"
    assert oauth.account_names_refresh(account=account) is False
    stored.refresh_from_db()
    assert stored.organization_name == "Acme"


def test_reconnect_as_a_different_cc_account_needs_confirmation(cc_app):
    account = cc_app.connect()
    stranger = cc_app.sandbox.create_account(
        "stranger@example.com", organization_name="Stranger Co"
    )
    session: dict = {}

    def reconnect(allow: bool):
        query = _query(
            connect_start(
                session=session,
                api_key=cc_app.api_key,
                reconnect=account,
                allow_account_switch=allow,
            )
        )
        code = cc_app.sandbox.authorize(
            cc_app.api_key.client_id,
            query["redirect_uri"],
            query["scope"],
            query["state"],
            account=stranger,
        )
        return connect_complete(session=session, params={"code": code, "state": query["state"]})

    with pytest.raises(AccountSwitchNeedsConfirmation):
        reconnect(allow=False)
    account.refresh_from_db()
    assert account.cc_user_id == cc_app.cc_account.sub
    result = reconnect(allow=True)
    assert result.account.pk == account.pk
    assert result.account.cc_user_id == stranger.sub
    assert result.account.login_email == "stranger@example.com"
    assert result.account.organization_name == "Stranger Co"


def test_disconnect_erases_tokens(connected_account):
    account_disconnect(account=connected_account)
    connected_account.refresh_from_db()
    assert connected_account.status == AccountStatus.DISCONNECTED
    assert connected_account.access_token == "" and connected_account.refresh_token == ""


def test_denied_flow_raises_connect_denied(cc_app):
    session: dict = {}
    query = _query(connect_start(session=session, api_key=cc_app.api_key))
    with pytest.raises(ConnectDenied):
        connect_complete(
            session=session, params={"error": "access_denied", "state": query["state"]}
        )


def test_no_secret_reaches_logs_or_pages_during_connect_refresh_and_call(
    cc_sandbox, transactional_db, caplog
):
    """Connect (PKCE), force a refresh, make an API call: every secret stays out of sight."""
    from integrations.services.gateway import cc_call
    from integrations.services.tokens import access_token

    caplog.set_level(logging.DEBUG)
    app = make_cc_app(cc_sandbox, client_id="leak-check", public=True)
    browser = Client()
    browser.force_login(StaffFactory())
    pages = []
    response = browser.post(reverse("integrations:connect", args=[app.api_key.pk]))
    query = _query(response["Location"])
    verifier = browser.session[oauth.SESSION_KEY][query["state"]]["verifier"]
    code = cc_sandbox.authorize(
        app.api_key.client_id,
        query["redirect_uri"],
        query["scope"],
        query["state"],
        code_challenge=query["code_challenge"],
    )
    response = browser.get(
        reverse("integrations:connect_callback"),
        {"code": code, "state": query["state"]},
        follow=True,
    )
    pages.append(response.content.decode())
    account = ConnectedAccount.objects.get()
    secrets = {
        "code": code,
        "verifier": verifier,
        "access": account.access_token,
        "refresh": account.refresh_token,
    }
    access_token(account=account, stale_version=account.token_version)
    account.refresh_from_db()
    secrets |= {"access2": account.access_token, "refresh2": account.refresh_token}
    cc_call(account=account, method="GET", path="/contact_lists")
    for url in ("integrations:account_list", "integrations:dashboard", "integrations:call_log"):
        pages.append(browser.get(reverse(url)).content.decode())
    pages.append(
        browser.get(reverse("integrations:account_detail", args=[account.pk])).content.decode()
    )
    pages.append(
        browser.get(
            reverse("admin:integrations_connectedaccount_change", args=[account.pk])
        ).content.decode()
    )
    logs = "\n".join(r.getMessage() for r in caplog.records)
    for name, value in secrets.items():
        assert value, name
        assert value not in logs, f"{name} leaked into logs"
        for page in pages:
            assert value not in page, f"{name} leaked into a page"

"""``/proxy/v3/...`` against the live sandbox: an application with a portal token reaches CC,
never sees CC's token, and gets a CC-shaped answer whenever ccportal itself refuses."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

import pytest
import requests
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from integrations.crypto import DecryptionError
from integrations.models import AccountLimiterState, AccountStatus, ApiCall, ConnectedAccount, Lane
from integrations.services.budgets import account_budget_set
from integrations.services.proxy_tokens import proxy_token_create, proxy_token_revoke
from integrations.services.quota import quota_pause
from tests.fixtures.portal import make_cc_app

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def app_token(connected_account):
    token, secret = proxy_token_create(name="wordpress", accounts=[connected_account])
    return token, secret


@pytest.fixture
def sent(cc_app, connected_account):
    """Requests CC received since the account was connected."""
    stats = cc_app.sandbox.stats
    before = stats(cc_app.api_key.client_id).requests
    return lambda: stats(cc_app.api_key.client_id).requests - before


def _call(proxy_client, secret, method, path, **kwargs):
    headers = {"Authorization": f"Bearer {secret}", **kwargs.pop("headers", {})}
    return proxy_client.generic(method, path, headers=headers, **kwargs)


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def _refusal(response, status, key):
    assert response.status_code == status, _body(response)
    assert response["Content-Type"] == "application/json"
    body = json.loads(_body(response))
    assert body["error_key"] == key and body["error_message"]
    return body


def test_a_get_reaches_cc_with_the_accounts_token_and_is_logged_under_the_tokens_name(
    sent, proxy_client, connected_account, app_token, cc_app
):
    token, secret = app_token
    response = _call(proxy_client, secret, "GET", "/proxy/v3/contact_lists?include_count=true")
    assert response.status_code == HTTPStatus.OK
    assert response["Content-Type"].startswith("application/json")
    lists = json.loads(_body(response))["lists"]
    assert {row["name"] for row in lists} == {"Newsletter", "Customers"}
    # A small answer goes back whole, with its length; big ones stream (the export test).
    assert not response.streaming
    assert int(response["Content-Length"]) == len(response.content)
    call = ApiCall.objects.get(pk=int(response["X-CC-Call-Id"]))
    assert (call.proxy_token, call.account, call.path_template) == (
        token,
        connected_account,
        "/contact_lists",
    )
    assert sent() == 1
    assert (
        int(response["X-CC-Quota-Remaining"])
        == 10_000 - cc_app.sandbox.stats(cc_app.api_key.client_id).today_count
    )


def test_a_proxied_call_reads_the_account_once(proxy_client, connected_account, app_token):
    """With the portal token, in the same query; the token service does not read it again."""
    _, secret = app_token
    _call(proxy_client, secret, "GET", "/proxy/v3/contact_lists")  # the first use is written
    with CaptureQueriesContext(connection) as queries:
        response = _call(proxy_client, secret, "GET", "/proxy/v3/contact_lists")
    assert response.status_code == HTTPStatus.OK
    reads = [q["sql"] for q in queries if q["sql"].lstrip().upper().startswith("SELECT")]
    assert sum('"integrations_connectedaccount"' in sql for sql in reads) == 1


def test_no_cc_token_ever_reaches_a_proxy_response(proxy_client, connected_account, app_token):
    _, secret = app_token
    access = ConnectedAccount.objects.get(pk=connected_account.pk).access_token
    refresh = ConnectedAccount.objects.get(pk=connected_account.pk).refresh_token
    answers = [
        _call(proxy_client, secret, "GET", "/proxy/v3/contact_lists"),
        _call(proxy_client, secret, "GET", "/proxy/v3/contacts/not-a-contact"),
        _call(
            proxy_client,
            secret,
            "POST",
            "/proxy/v3/contact_lists",
            data=b"{",
            content_type="application/json",
        ),
        _call(proxy_client, "ccp_wrong", "GET", "/proxy/v3/contact_lists"),
    ]
    for response in answers:
        shown = _body(response).decode() + json.dumps(dict(response.items()))
        assert access not in shown and refresh not in shown and secret not in shown


def test_ccs_errors_come_back_verbatim(proxy_client, app_token):
    _, secret = app_token
    response = _call(
        proxy_client, secret, "GET", "/proxy/v3/contact_lists/00000000-0000-0000-0000-000000000000"
    )
    assert response.status_code == HTTPStatus.NOT_FOUND
    assert "X-CC-Call-Id" in response


def test_a_multipart_csv_import_goes_through_as_sent(proxy_client, cc_app, app_token):
    _, secret = app_token
    newsletter = cc_app.lists[0].list_id
    prepared = requests.Request(
        "POST",
        "http://portal/",
        files={"file": ("people.csv", b"email\na@example.com\nb@example.com\n", "text/csv")},
        data={"list_ids": newsletter},
    ).prepare()
    response = _call(
        proxy_client,
        secret,
        "POST",
        "/proxy/v3/activities/contacts_file_import",
        data=prepared.body,
        content_type=prepared.headers["Content-Type"],
    )
    assert response.status_code == HTTPStatus.CREATED, _body(response)
    activity = json.loads(_body(response))
    assert activity["activity_id"]
    for _ in range(200):
        members = {m.email for m in cc_app.sandbox.list_members(cc_app.cc_account, newsletter)}
        if members:
            break
        cc_app.sandbox.advance_clock(1)
    assert {"a@example.com", "b@example.com"} <= members


def test_a_big_export_is_streamed_not_held(proxy_client, cc_app, connected_account, app_token):
    _, secret = app_token
    cc_app.sandbox.seed_contacts(cc_app.cc_account, count=3_000)
    export = _call(
        proxy_client,
        secret,
        "POST",
        "/proxy/v3/activities/contact_exports",
        data=json.dumps({"fields": ["email_address"]}).encode(),
        content_type="application/json",
    )
    assert export.status_code == HTTPStatus.CREATED, _body(export)
    activity = json.loads(_body(export))
    done = None
    for _ in range(100):
        cc_app.sandbox.advance_clock(5)
        done = json.loads(
            _body(
                _call(
                    proxy_client, secret, "GET", f"/proxy/v3/activities/{activity['activity_id']}"
                )
            )
        )
        if done["state"] == "completed":
            break
    assert done["state"] == "completed", done
    results = done["_links"]["results"]["href"].removeprefix("/v3")
    response = _call(
        proxy_client, secret, "GET", f"/proxy/v3{results}", headers={"Accept": "text/csv"}
    )
    assert response.status_code == HTTPStatus.OK
    assert response.streaming
    chunks = list(response.streaming_content)
    assert len(chunks) > 1  # handed on as CC sent it, a piece at a time
    lines = b"".join(chunks).decode().splitlines()
    assert len(lines) == 3_001


@pytest.mark.parametrize(
    "authorization",
    ["", "Basic dXNlcjpwdw==", "Bearer ccp_unknown", "Bearer not-a-portal-token"],
)
def test_a_bad_token_is_401(sent, proxy_client, app_token, cc_app, authorization):
    response = proxy_client.get("/proxy/v3/contact_lists", headers={"Authorization": authorization})
    _refusal(response, HTTPStatus.UNAUTHORIZED, "unauthorized")
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert sent() == 0


def test_a_revoked_or_expired_token_is_401(proxy_client, app_token, cc_app):
    token, secret = app_token
    proxy_token_revoke(name=token.name)
    body = _refusal(
        _call(proxy_client, secret, "GET", "/proxy/v3/contact_lists"), 401, "unauthorized"
    )
    assert "revoked" in body["error_message"]
    expired, expired_secret = proxy_token_create(
        name="old", accounts=token.accounts.all(), expires_days=1
    )
    type(expired).objects.filter(pk=expired.pk).update(expires_at=F("created_at"))
    body = _refusal(
        _call(proxy_client, expired_secret, "GET", "/proxy/v3/contact_lists"), 401, "unauthorized"
    )
    assert "expired" in body["error_message"]


def test_an_account_outside_the_token_is_403_and_several_need_a_choice(
    proxy_client, cc_app, connected_account, app_token
):
    _, secret = app_token
    other_app = make_cc_app(cc_app.sandbox, client_id="other-app")
    other = other_app.connect()
    _refusal(
        _call(
            proxy_client,
            secret,
            "GET",
            "/proxy/v3/contact_lists",
            headers={"X-CC-Account": str(other.pk)},
        ),
        HTTPStatus.FORBIDDEN,
        "forbidden",
    )
    _, both = proxy_token_create(name="both", accounts=[connected_account, other])
    body = _refusal(_call(proxy_client, both, "GET", "/proxy/v3/contact_lists"), 400, "bad_request")
    assert "X-CC-Account" in body["error_message"]
    chosen = _call(
        proxy_client,
        both,
        "GET",
        "/proxy/v3/contact_lists",
        headers={"X-CC-Account": str(other.pk)},
    )
    assert chosen.status_code == HTTPStatus.OK
    assert ApiCall.objects.get(pk=int(chosen["X-CC-Call-Id"])).account == other


def test_an_account_needing_reconnect_is_409_naming_its_page(
    sent, proxy_client, connected_account, app_token, cc_app
):
    _, secret = app_token
    ConnectedAccount.objects.filter(pk=connected_account.pk).update(
        status=AccountStatus.NEEDS_RECONNECT, status_reason="CC refused the refresh token."
    )
    body = _refusal(
        _call(proxy_client, secret, "GET", "/proxy/v3/contact_lists"), 409, "needs_reconnect"
    )
    assert f"/accounts/{connected_account.pk}/" in body["error_message"]
    assert sent() == 0


def test_a_body_past_the_limit_is_413_before_anything_is_sent(
    sent, proxy_client, settings, app_token, cc_app
):
    _, secret = app_token
    settings.CC_PROXY_MAX_BODY_BYTES = 1_000
    response = _call(
        proxy_client,
        secret,
        "POST",
        "/proxy/v3/contact_lists",
        data=b"x" * 1_001,
        content_type="application/json",
    )
    _refusal(response, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "payload_too_large")
    assert sent() == 0


@pytest.mark.parametrize(
    "path",
    [
        "/proxy/v3/../oauth2/default/v1/token",
        "/proxy/v3/%2e%2e/%2e%2e/secret",
        "/proxy/v3/%252e%252e/secret",
        "/proxy/v3/http://evil.example/steal",
        "/proxy/v3//evil.example/steal",
        "/proxy/v3/contacts\\..\\..\\x",
    ],
)
def test_a_path_that_leaves_v3_is_400_before_anything_is_sent(
    sent, proxy_client, app_token, cc_app, path
):
    _, secret = app_token
    _refusal(_call(proxy_client, secret, "GET", path), HTTPStatus.BAD_REQUEST, "bad_request")
    assert sent() == 0


@pytest.mark.parametrize("lane", [Lane.INTERACTIVE, Lane.BACKGROUND])
def test_a_slot_further_than_the_lane_waits_is_429_with_retry_after(
    sent, proxy_client, settings, app_token, cc_app, lane
):
    _, secret = app_token
    settings.CC_PROXY_MAX_WAIT_INTERACTIVE = 1.0
    settings.CC_PROXY_MAX_WAIT_BACKGROUND = 1.0
    quota_pause(api_key=cc_app.api_key, seconds=30)
    response = _call(
        proxy_client, secret, "GET", "/proxy/v3/contact_lists", headers={"X-CC-Lane": lane}
    )
    _refusal(response, HTTPStatus.TOO_MANY_REQUESTS, "throttled")
    assert 20 <= int(response["Retry-After"]) <= 30
    assert sent() == 0


def test_a_spent_cap_is_429_quota_exceeded_with_retry_after(
    sent, settings, proxy_client, connected_account, app_token, cc_app
):
    _, secret = app_token
    settings.CC_QUOTA_ACCOUNT_REFRESH = 0  # the new cap applies at once in this process
    booked = cc_app.sandbox.stats(cc_app.api_key.client_id).today_count  # the connect's
    account_budget_set(account=connected_account, per_day=booked + 1)
    assert (
        _call(proxy_client, secret, "GET", "/proxy/v3/contact_lists").status_code == HTTPStatus.OK
    )
    response = _call(proxy_client, secret, "GET", "/proxy/v3/contact_lists")
    body = _refusal(response, HTTPStatus.TOO_MANY_REQUESTS, "quota_exceeded")
    assert "daily cap" in body["error_message"]
    assert 0 < int(response["Retry-After"]) <= 86_400 + 60
    assert sent() == 1


def test_each_tokens_calls_are_booked_in_their_own_part_of_the_accounts_share(
    proxy_client, settings, connected_account, app_token, cc_app
):
    """Booked in the token's flow (read here from the database store's rows; the store suite
    holds every store to the same per-flow rules)."""
    settings.CC_QUOTA_STORE = "integrations.services.quota_stores.DatabaseStore"
    token, secret = app_token
    _, other_secret = proxy_token_create(name="node-worker", accounts=[connected_account])
    for key in (secret, secret, other_secret):
        response = _call(
            proxy_client, key, "GET", "/proxy/v3/contact_lists", headers={"X-CC-Lane": "background"}
        )
        assert response.status_code == HTTPStatus.OK
    flows = dict(
        AccountLimiterState.objects.filter(account=connected_account).values_list(
            "token", "day_count"
        )
    )
    other = flows.keys() - {0, token.pk}
    assert flows[token.pk] == 2 and len(other) == 1 and flows[other.pop()] == 1


def test_an_unknown_lane_is_400(proxy_client, app_token):
    _, secret = app_token
    response = _call(
        proxy_client, secret, "GET", "/proxy/v3/contact_lists", headers={"X-CC-Lane": "fast"}
    )
    _refusal(response, HTTPStatus.BAD_REQUEST, "bad_request")


def test_a_429_writes_no_log_line_but_a_bad_token_still_does(
    proxy_client, cc_app, app_token, caplog
):
    """A flooding client is told 429 many times a second; its log would drown the rest."""
    _, secret = app_token
    quota_pause(api_key=cc_app.api_key, seconds=30)
    with caplog.at_level(logging.WARNING, logger="django.request"):
        busy = _call(proxy_client, secret, "GET", "/proxy/v3/contact_lists")
        unknown = _call(proxy_client, "ccp_not-a-token", "GET", "/proxy/v3/contact_lists")
    assert (busy.status_code, unknown.status_code) == (429, 401)
    logged = [r.getMessage() for r in caplog.records if r.name == "django.request"]
    assert logged == ["Unauthorized: /proxy/v3/contact_lists"]


def test_tokens_no_key_opens_are_a_json_500_naming_the_fix(proxy_client, app_token, monkeypatch):
    def unreadable(**kwargs):
        raise DecryptionError("No key in FIELD_ENCRYPTION_KEYS opens a stored token.")

    monkeypatch.setattr("integrations.services.proxy.proxy_forward", unreadable)
    _, secret = app_token
    body = _refusal(
        _call(proxy_client, secret, "GET", "/proxy/v3/contact_lists"),
        HTTPStatus.INTERNAL_SERVER_ERROR,
        "tokens_unreadable",
    )
    assert "FIELD_ENCRYPTION_KEYS" in body["error_message"]


def test_plain_http_is_refused_where_the_portal_requires_https(
    sent, proxy_client, settings, app_token, cc_app
):
    """Pages redirect to HTTPS; the proxy refuses, so no client resends its token in clear."""
    settings.SECURE_SSL_REDIRECT = True
    _, secret = app_token
    body = _refusal(
        _call(proxy_client, secret, "GET", "/proxy/v3/contact_lists"),
        HTTPStatus.FORBIDDEN,
        "https_required",
    )
    assert "https://" in body["error_message"] and secret not in body["error_message"]
    assert sent() == 0
    secure = _call(proxy_client, secret, "GET", "/proxy/v3/contact_lists", secure=True)
    assert secure.status_code == HTTPStatus.OK


def test_the_call_log_and_the_key_panel_name_the_app(proxy_client, staff_client, cc_app, app_token):
    _, secret = app_token
    response = _call(proxy_client, secret, "GET", "/proxy/v3/contact_lists")
    call_id = int(response["X-CC-Call-Id"])
    log = staff_client.get("/calls/").content.decode()
    assert "via wordpress" in log
    detail = staff_client.get(f"/calls/{call_id}/").content.decode()
    assert "wordpress (through the proxy)" in detail
    panel = staff_client.get(f"/keys/{cc_app.api_key.pk}/panel/").content.decode()
    assert "Today by app (proxy)" in panel and "<td>wordpress</td><td>1</td>" in panel

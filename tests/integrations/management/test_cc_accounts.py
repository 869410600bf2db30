"""``cc_accounts`` and ``cc_tokens_keepalive`` as an operator runs them, against the sandbox."""

from __future__ import annotations

import datetime as dt
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from integrations.models import ConnectedAccount
from integrations.services.oauth import account_disconnect

pytestmark = pytest.mark.django_db(transaction=True)


def run(command: str, *args: str) -> str:
    out = StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


def test_list_without_accounts_says_how_to_connect_one():
    assert "Connect one in the portal" in run("cc_accounts", "list")


def test_list_shows_each_account_with_status_and_expiry(connected_account):
    lines = run("cc_accounts", "list").splitlines()
    assert lines[0].split()[:3] == ["ID", "ACCOUNT", "KEY"]
    row = lines[1]
    assert row.split()[0] == str(connected_account.pk)
    assert "Example Owner's organization (owner@example.com)" in row, "named, not by its id"
    assert connected_account.cc_user_id not in row
    assert "connected" in row.split(), "the STATUS column is the account's health"
    assert "23h5" in row, "a fresh CC token lives 24 h"


def test_show_prints_identity_scopes_and_a_fingerprint_never_the_token(connected_account):
    account = ConnectedAccount.objects.get(pk=connected_account.pk)
    out = run("cc_accounts", "show", str(account.pk))
    assert account.cc_user_id in out
    lines = out.splitlines()
    assert lines[0].split(None, 1) == [
        "account",
        "Example Owner's organization (owner@example.com)",
    ]
    assert "owner@example.com" in next(line for line in lines if line.startswith("login email"))
    assert "contact_data account_read offline_access" in out
    assert f"fingerprint {account.access_token_fingerprint}" in out
    assert account.access_token not in out and account.refresh_token not in out


def test_show_of_a_disconnected_account_says_so(connected_account):
    account_disconnect(account=connected_account)
    out = run("cc_accounts", "show", str(connected_account.pk))
    assert "Disconnected" in out and "access token" in out and "none" in out


def test_show_of_an_unknown_account_is_a_one_line_error(db):
    with pytest.raises(CommandError, match="no connected account with id 404"):
        run("cc_accounts", "show", "404")


def test_show_needs_a_numeric_id(db):
    with pytest.raises(CommandError, match="invalid int value"):
        run("cc_accounts", "show", "abc")


def test_keepalive_refreshes_only_idle_tokens_through_the_token_endpoint(cc_app, connected_account):
    token_requests = cc_app.sandbox.stats(cc_app.api_key.client_id).token_requests
    assert run("cc_tokens_keepalive").strip() == "No idle refresh tokens."
    ConnectedAccount.objects.filter(pk=connected_account.pk).update(
        refresh_token_issued_at=timezone.now() - dt.timedelta(days=160),
        refresh_token_last_used_at=None,
    )
    assert run("cc_tokens_keepalive").strip() == f"{connected_account}: refreshed"
    assert cc_app.sandbox.stats(cc_app.api_key.client_id).token_requests == token_requests + 1
    assert run("cc_tokens_keepalive", "--idle-days", "30").strip() == "No idle refresh tokens."


def test_a_secret_no_key_opens_is_named_in_lists_and_a_one_line_error_where_needed(
    connected_account, settings
):
    from cryptography.fernet import Fernet

    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    assert "tokens_unreadable" in run("cc_accounts", "list")
    shown = run("cc_accounts", "show", str(connected_account.pk))
    assert "Tokens unreadable" in shown and "fingerprint unreadable: re-enter it" in shown
    with pytest.raises(CommandError, match=r"Cannot decrypt .*FIELD_ENCRYPTION_KEYS") as failed:
        run("cc_request", "GET", "/contact_lists")
    assert "\n" not in str(failed.value)


def test_usage_of_a_key_named_by_a_non_ascii_digit_is_an_error(db):
    with pytest.raises(CommandError, match="no API key '²'"):
        run("cc_usage", "--key", "²")


def test_show_of_a_rotating_account_recommends_long_lived_tokens(db):
    from integrations.models import RefreshMode
    from tests.factories import ConnectedAccountFactory

    account = ConnectedAccountFactory(refresh_mode=RefreshMode.ROTATING)
    out = run("cc_accounts", "show", str(account.pk))
    assert "refresh mode" in out and "Rotating" in out
    assert "hint: CC's long-lived refresh tokens are safer" in out

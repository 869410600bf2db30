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


# --- set-budget: an account's weight and daily cap --------------------------------------------
@pytest.fixture
def budget_account(db):
    from integrations.models import Tier
    from tests.factories import ApiKeyFactory, ConnectedAccountFactory

    key = ApiKeyFactory(tier=Tier.CUSTOM, custom_per_second=4, custom_per_day=10_000)
    return ConnectedAccountFactory(api_key=key, organization_name="Acme")


def _budget(account: ConnectedAccount) -> tuple[int, int | None, float | None]:
    account.refresh_from_db()
    return account.share_weight, account.daily_cap, account.daily_share


def test_set_budget_sets_a_cap_in_calls_and_a_weight_and_prints_the_budget(budget_account):
    out = run(
        "cc_accounts", "set-budget", str(budget_account.pk), "--per-day", "100", "--weight", "2"
    )
    assert out.strip() == "Acme: weight 2 · cap 100 calls/day"
    assert _budget(budget_account) == (2, 100, None)


def test_set_budget_share_replaces_the_cap_in_calls_and_keeps_the_weight(budget_account):
    run("cc_accounts", "set-budget", str(budget_account.pk), "--per-day", "100", "--weight", "3")
    out = run("cc_accounts", "set-budget", str(budget_account.pk), "--share", "0.2")
    assert "weight 3 · cap 20% of the key's day (2,000 calls)" in out
    assert _budget(budget_account) == (3, None, 0.2)
    run("cc_accounts", "set-budget", str(budget_account.pk), "--share", "12.5%")
    assert _budget(budget_account) == (3, None, 0.125)
    run("cc_accounts", "set-budget", str(budget_account.pk), "--per-day", "50")
    assert _budget(budget_account) == (3, 50, None), "a cap in calls clears the share"


def test_set_budget_no_cap_clears_both_caps(budget_account):
    ConnectedAccount.objects.filter(pk=budget_account.pk).update(daily_cap=10, daily_share=0.5)
    out = run("cc_accounts", "set-budget", str(budget_account.pk), "--no-cap")
    assert out.strip() == "Acme: weight 1 · no cap"
    assert _budget(budget_account) == (1, None, None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "nothing to set: give --per-day, --share, --no-cap or --weight"),
        (("--per-day", "10", "--share", "0.1"), "not allowed with argument"),
        (("--per-day", "10", "--no-cap"), "not allowed with argument"),
        (("--per-day", "abc"), "'abc' is not a whole number"),
        (("--per-day", "0"), "daily cap must be a whole number of calls from 1"),
        (("--weight", "0"), "weight must be a whole number from 1 to 1000; got 0"),
        (("--weight", "2.5"), "'2.5' is not a whole number"),
        (("--share", "1.5"), "daily share must be more than 0 and at most 1"),
        (("--share", "0"), "daily share must be more than 0"),
        (("--share", "nan"), "daily share must be more than 0"),
        (("--share", "lots"), "'lots' is not a share"),
    ],
)
def test_set_budget_refuses_bad_input_in_one_line_and_changes_nothing(
    budget_account, args, message
):
    with pytest.raises(CommandError, match=message) as refused:
        run("cc_accounts", "set-budget", str(budget_account.pk), *args)
    assert "\n" not in str(refused.value)
    assert _budget(budget_account) == (1, None, None)


def test_set_budget_of_an_unknown_account_is_a_one_line_error(db):
    with pytest.raises(CommandError, match="no connected account with id 404"):
        run("cc_accounts", "set-budget", "404", "--weight", "2")


@pytest.mark.django_db  # migration 0007's groups, which a transactional test's flush removes
def test_set_budget_needs_the_operate_permission_but_list_does_not(budget_account):
    from integrations.permissions import OPERATE_PORTAL, refusal_message
    from tests.factories import OPERATORS, VIEWERS, PortalUserFactory

    viewer = PortalUserFactory(username="vera", groups=[VIEWERS])
    listing = StringIO()
    call_command("cc_accounts", "list", as_user="vera", stdout=listing)
    assert "Acme" in listing.getvalue()
    with pytest.raises(CommandError) as refused:
        call_command(
            "cc_accounts", "set-budget", str(budget_account.pk), "--weight", "2", as_user="vera"
        )
    assert str(refused.value) == refusal_message(viewer, OPERATE_PORTAL)
    assert _budget(budget_account) == (1, None, None)
    PortalUserFactory(username="otto", groups=[OPERATORS])
    call_command(
        "cc_accounts",
        "set-budget",
        str(budget_account.pk),
        "--weight",
        "2",
        as_user="otto",
        stdout=StringIO(),
    )
    assert _budget(budget_account) == (2, None, None)


def test_list_and_show_give_each_accounts_weight_and_cap(budget_account):
    from tests.factories import ConnectedAccountFactory

    ConnectedAccount.objects.filter(pk=budget_account.pk).update(share_weight=4, daily_share=0.25)
    other = ConnectedAccountFactory(api_key=budget_account.api_key, organization_name="Beta")
    lines = run("cc_accounts", "list").splitlines()
    assert lines[0].split()[-2:] == ["WEIGHT", "CAP"]
    acme = next(line for line in lines if "Acme" in line)
    assert acme.split()[-3:] == ["4", "2,500/day", "(25%)"]
    beta = next(line for line in lines if "Beta" in line)
    assert beta.split()[-2:] == ["1", "—"]
    shown = run("cc_accounts", "show", str(budget_account.pk))
    assert "weight 4 · cap 25% of the key's day (2,500 calls)" in shown
    assert other.pk != budget_account.pk

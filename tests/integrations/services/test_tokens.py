"""The token lifecycle against the live sandbox, with real OS processes for the races."""

from __future__ import annotations

import datetime as dt
import itertools
import multiprocessing
import signal
import time

import pytest
from django.utils import timezone

from integrations.models import AccountStatus, ConnectedAccount, RefreshMode
from integrations.services import quota
from integrations.services.tokens import (
    AccountNotConnected,
    access_token,
    token_is_due,
    tokens_keep_alive,
)
from tests.fixtures.portal import make_cc_app
from tests.support_procs import process_pool

pytestmark = pytest.mark.django_db(transaction=True)


def _expire(account: ConnectedAccount) -> None:
    ConnectedAccount.objects.filter(pk=account.pk).update(
        access_expires_at=timezone.now() - dt.timedelta(minutes=1)
    )


def _expired_accounts(app, count: int, *, email: str, **fields) -> list[int]:
    """``count`` CC accounts connected through ``app`` with tokens the sandbox minted, every
    access token already expired; returns the portal accounts' ids."""
    ids = []
    for n in range(count):
        cc_account = app.sandbox.create_account(email.format(n=n))
        tokens = app.sandbox.mint_tokens(app.api_key.client_id, account=cc_account)
        ids.append(
            ConnectedAccount.objects.create(
                api_key=app.api_key,
                cc_user_id=cc_account.sub,
                label=cc_account.email,
                access_token=tokens["access_token"],
                refresh_token=tokens["refresh_token"],
                access_expires_at=timezone.now() - dt.timedelta(seconds=1),
                scopes=["contact_data", "offline_access"],
                token_version=1,
                **fields,
            ).pk
        )
    return ids


def _token_requests(app) -> int:
    return app.sandbox.stats(app.api_key.client_id).token_requests


def test_stored_token_is_used_until_it_falls_due(cc_app, connected_account):
    before = _token_requests(cc_app)
    assert access_token(account=connected_account) == connected_account.access_token
    assert _token_requests(cc_app) == before
    # Due = within the 5-minute skew plus the account's stable spread (< 2 minutes).
    spread = connected_account.refresh_spread_seconds
    connected_account.access_expires_at = timezone.now() + dt.timedelta(seconds=300 + spread + 30)
    assert not token_is_due(connected_account)
    connected_account.access_expires_at = timezone.now() + dt.timedelta(seconds=300 + spread - 5)
    assert token_is_due(connected_account)


def test_due_token_is_refreshed_once_and_mode_detected(cc_app, connected_account):
    old_access, old_refresh = connected_account.access_token, connected_account.refresh_token
    _expire(connected_account)
    new = access_token(account=connected_account)
    account = ConnectedAccount.objects.get(pk=connected_account.pk)
    assert new == account.access_token != old_access
    assert account.refresh_token == old_refresh  # the app uses long-lived refresh tokens
    assert account.refresh_mode == RefreshMode.LONG_LIVED
    assert account.access_expires_at > timezone.now() + dt.timedelta(hours=23)
    assert account.refresh_token_last_used_at is not None
    assert _token_requests(cc_app) == 2  # connect + one refresh


def test_rotating_mode_is_detected_and_new_refresh_token_kept(cc_sandbox, transactional_db):
    app = make_cc_app(cc_sandbox, client_id="rotating-app", refresh_mode="rotating")
    account = app.connect()
    old_refresh = account.refresh_token
    _expire(account)
    access_token(account=account)
    account.refresh_from_db()
    assert account.refresh_mode == RefreshMode.ROTATING
    assert account.refresh_token != old_refresh


def test_invalid_grant_marks_needs_reconnect_and_stops_token_calls(cc_app, connected_account):
    cc_app.sandbox.inject_token_fault("invalid_grant", client_id=cc_app.api_key.client_id)
    _expire(connected_account)
    with pytest.raises(AccountNotConnected, match="needs reconnect"):
        access_token(account=connected_account)
    account = ConnectedAccount.objects.get(pk=connected_account.pk)
    assert account.status == AccountStatus.NEEDS_RECONNECT
    assert "invalid_grant" in account.status_reason
    requests_after = _token_requests(cc_app)
    with pytest.raises(AccountNotConnected):
        access_token(account=account)
    assert _token_requests(cc_app) == requests_after


@pytest.mark.parametrize("fault", ["429", "503"])
def test_token_endpoint_trouble_keeps_the_old_token_and_backs_off(cc_app, connected_account, fault):
    cc_app.sandbox.inject_token_fault(fault, client_id=cc_app.api_key.client_id)
    # Due (inside the skew) but not yet expired: the old token stays in use.
    ConnectedAccount.objects.filter(pk=connected_account.pk).update(
        access_expires_at=timezone.now() + dt.timedelta(seconds=60)
    )
    assert access_token(account=connected_account) == connected_account.access_token
    account = ConnectedAccount.objects.get(pk=connected_account.pk)
    assert account.status == AccountStatus.ACTIVE
    assert account.refresh_backoff_until > timezone.now()
    before = _token_requests(cc_app)
    access_token(account=account)  # within the backoff: no new token call
    assert _token_requests(cc_app) == before


def test_invalid_grant_after_a_sibling_stored_a_new_pair_keeps_the_account(
    cc_app, connected_account, monkeypatch
):
    """With rotating tokens, a caller whose refresh CC refuses because a sibling already spent
    the token must take the sibling's pair, not mark the account for a reconnect."""
    from integrations.services import tokens

    _expire(connected_account)
    sibling = cc_app.sandbox.mint_tokens(cc_app.api_key.client_id, account=cc_app.cc_account)
    real_refresh = tokens.cc_oauth.token_refresh

    def sibling_wins_first(**request):
        # The sibling stores its fresh pair while this caller's request is on the way.
        ConnectedAccount.objects.filter(pk=connected_account.pk).update(
            access_token=sibling["access_token"],
            refresh_token=sibling["refresh_token"],
            access_expires_at=timezone.now() + dt.timedelta(hours=24),
            token_version=connected_account.token_version + 1,
        )
        return real_refresh(**request)

    monkeypatch.setattr(tokens.cc_oauth, "token_refresh", sibling_wins_first)
    cc_app.sandbox.inject_token_fault("invalid_grant", client_id=cc_app.api_key.client_id)

    assert access_token(account=connected_account) == sibling["access_token"]
    account = ConnectedAccount.objects.get(pk=connected_account.pk)
    assert account.status == AccountStatus.ACTIVE and not account.status_reason
    assert cc_app.sandbox.stats(cc_app.api_key.client_id).invalid_grant == 1


def test_keep_alive_refreshes_refresh_tokens_idle_for_150_days(cc_app, connected_account):
    ConnectedAccount.objects.filter(pk=connected_account.pk).update(
        refresh_token_issued_at=timezone.now() - dt.timedelta(days=151),
        refresh_token_last_used_at=None,
    )
    outcomes = tokens_keep_alive()
    assert [(a.pk, o) for a, o in outcomes] == [(connected_account.pk, "refreshed")]
    assert tokens_keep_alive() == []


def test_8_processes_x_8_threads_share_one_refresh(cc_app, connected_account, sandbox_settings):
    _expire(connected_account)
    start = time.time() + 3
    with process_pool(8, sandbox_settings) as pool:
        from tests.integrations.services import token_workers

        tasks = [{"account_id": connected_account.pk, "threads": 8, "start": start}] * 8
        results = pool.map(token_workers.tokens_from_threads, tasks)
    tokens = {token for batch in results for token in batch}
    assert sum(len(batch) for batch in results) == 64
    account = ConnectedAccount.objects.get(pk=connected_account.pk)
    assert tokens == {account.access_token}
    stats = cc_app.sandbox.stats(cc_app.api_key.client_id)
    assert stats.token_requests == 2  # connect + exactly one refresh
    assert stats.token_429 == 0


@pytest.mark.slow
def test_accounts_falling_due_together_are_refreshed_at_the_token_endpoints_pace(
    cc_sandbox, transactional_db, sandbox_settings, settings
):
    """60 accounts fall due at once and 4 processes refresh them: one successful token request
    each, every one booked a spacing after the last, whichever process booked it. CC's endpoint
    takes 1 request/s; here the sandbox's and ccportal's pace are set to 4/s, so the same
    property shows in 19 s, not 75. How the arrivals fell at the sandbox depends on the
    machine's load (a process descheduled past the margin arrives late); the refresh-storm
    benchmark shows them, and a caller the endpoint turned away gets its token after the
    backoff, as here."""
    settings.CC_TOKEN_REQUESTS_PER_SECOND = 4
    cc_sandbox.set_options(token_requests_per_second=4)
    app = make_cc_app(cc_sandbox, client_id="storm-app")
    accounts = _expired_accounts(app, 60, email="owner{n}@example.com")
    start = time.time() + 3
    groups = [accounts[i::4] for i in range(4)]
    with process_pool(4, sandbox_settings) as pool:
        from tests.integrations.services import token_workers

        results = pool.map(
            token_workers.refresh_accounts, [{"account_ids": g, "start": start} for g in groups]
        )
    assert sum(len(r["tokens"]) for r in results) == 60
    refreshed = ConnectedAccount.objects.filter(
        api_key=app.api_key, access_expires_at__gt=timezone.now() + dt.timedelta(hours=23)
    )
    assert refreshed.count() == 60
    stats = cc_sandbox.stats(app.api_key.client_id)
    assert stats.token_requests - stats.token_429 == 60  # one successful refresh per account
    slots = sorted(slot for r in results for slot in r["slots"])
    assert len(slots) == stats.token_requests
    spacing = (1 + quota.TOKEN_MARGIN) / 4
    assert min(later - earlier for earlier, later in itertools.pairwise(slots)) >= spacing - 1e-6


@pytest.mark.slow
def test_a_refresh_waiting_for_a_far_token_slot_keeps_its_lease(
    cc_sandbox, transactional_db, sandbox_settings, settings
):
    """8 rotating accounts fall due and 4 processes ask for all of them: the last refresh waits
    about 10 s for its token-endpoint slot, far longer than the 1 s lease. The holder extends
    its lease over the wait, so no sibling takes over and spends the same refresh token again
    (which rotating mode punishes with invalid_grant)."""
    settings.CC_TOKEN_LEASE_SECONDS = 1
    app = make_cc_app(cc_sandbox, client_id="slow-slots", refresh_mode="rotating")
    accounts = _expired_accounts(
        app, 8, email="slot{n}@example.com", refresh_mode=RefreshMode.ROTATING
    )
    start = time.time() + 3
    with process_pool(4, sandbox_settings) as pool:
        from tests.integrations.services import token_workers

        pool.map(token_workers.refresh_accounts, [{"account_ids": accounts, "start": start}] * 4)
    stats = cc_sandbox.stats(app.api_key.client_id)
    assert stats.token_requests == 8, "one refresh per account"
    assert stats.invalid_grant == 0
    assert set(
        ConnectedAccount.objects.filter(pk__in=accounts).values_list("status", flat=True)
    ) == {AccountStatus.ACTIVE}


@pytest.mark.parametrize(
    ("mode", "expect_status"),
    [("long_lived", AccountStatus.ACTIVE), ("rotating", AccountStatus.NEEDS_RECONNECT)],
)
def test_lease_holder_killed_mid_refresh(
    cc_sandbox, transactional_db, sandbox_settings, settings, mode, expect_status
):
    settings.CC_TOKEN_LEASE_SECONDS = 3
    app = make_cc_app(cc_sandbox, client_id=f"kill-{mode}", refresh_mode=mode)
    account = app.connect()
    old_refresh = account.refresh_token
    _expire(account)
    from django.db import connection

    from tests.integrations.services.token_workers import die_mid_refresh

    child = multiprocessing.get_context("spawn").Process(
        target=die_mid_refresh,
        args=(
            connection.settings_dict["NAME"],
            {**sandbox_settings, "CC_TOKEN_LEASE_SECONDS": 3},
            account.pk,
        ),
    )
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    held = ConnectedAccount.objects.get(pk=account.pk)
    assert held.refresh_lease_owner  # the dead holder's lease is still there
    requests_at_kill = _token_requests(app)

    if expect_status == AccountStatus.ACTIVE:
        new = access_token(account=held)  # waits for the lease to expire, then refreshes once
        held.refresh_from_db()
        assert new == held.access_token
        assert held.refresh_token == old_refresh  # long-lived: nothing was lost
    else:
        with pytest.raises(AccountNotConnected):
            access_token(account=held)
        held.refresh_from_db()
        assert "interrupted" in held.status_reason and "long-lived" in held.status_reason
    assert held.status == expect_status
    assert _token_requests(app) == requests_at_kill + 1

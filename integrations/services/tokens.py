"""Access tokens for connected accounts: the only way any code gets one.

Guarantees:

* A stored token is returned as long as it does not expire within the refresh skew (5 minutes
  plus a stable per-account spread), so CC's 1 request/s token endpoint is only asked when a
  token really falls due — never before every call.
* Refreshes are single-flight across threads, processes and hosts: one caller takes a lease on
  the account row by compare-and-set on ``token_version``; no transaction is held open across
  the HTTP call. Everyone else waits for the version to move and uses the new token.
* Every token request passes the token-endpoint limiter (≤ 1 per second per client_id, shared
  by all processes) and is recorded in the call ledger.
* A new access/refresh pair is written in one statement fenced by the version, so a refresh
  that lost its lease can never overwrite a newer pair.
* ``invalid_grant`` marks the account ``needs_reconnect`` (after re-reading: a sibling may have
  won) and no further token call is made for it. Nothing else does. A throttled, failing or
  slow token endpoint leaves the old token in use until it really expires, with backoff.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
import uuid
from collections.abc import Callable
from http import HTTPStatus

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from integrations import conf, crypto
from integrations.constant_contact import oauth as cc_oauth
from integrations.constant_contact.errors import NO_ANSWER_TIMEOUT, CCTransportError, OAuthError
from integrations.constant_contact.http import shared_session
from integrations.errors import PortalError, Unavailable
from integrations.models import (
    AccountStatus,
    ApiKey,
    CallKind,
    ConnectedAccount,
    Lane,
    RefreshMode,
)
from integrations.services.alert_rules import account_health_emit
from integrations.services.audit import api_call_record
from integrations.services.jwt import access_token_peek_expiry, access_token_validate
from integrations.services.quota import Reservation, quota_wait, token_slot_reserve

logger = logging.getLogger(__name__)

TOKEN_PATH = "/oauth2/default/v1/token"
TOKEN_READ_TIMEOUT = 15.0
MAX_BACKOFF_SECONDS = 300.0


class AccountNotConnected(PortalError):
    """The account has no usable tokens: it was disconnected or needs a reconnect."""

    def __init__(self, account: ConnectedAccount) -> None:
        self.account = account
        reason = f": {account.status_reason}" if account.status_reason else ""
        super().__init__(f"CC account {account} is {account.get_status_display().lower()}{reason}")


class TokenRefreshFailed(Unavailable):
    """The access token has expired and CC's token endpoint could not renew it just now."""


class _LeaseLost(Exception):
    """Another caller took over this refresh while this one waited for a token slot."""


@sensitive_variables()
def token_endpoint_call(
    *,
    api_key: ApiKey,
    account: ConnectedAccount | None,
    request,
    on_slot: Callable[[Reservation], None] | None = None,
) -> cc_oauth.TokenResponse:
    """Call CC's token endpoint through the shared 1/s limiter and record the attempt.

    ``request`` is one of the ``constant_contact.oauth`` token functions with everything but
    the session bound; it is called with ``session=`` and the configured ``token_url=``.
    ``on_slot`` learns the booked slot before the wait for it (a refresh extends its lease to
    cover the wait); should it raise, nothing is sent.
    """
    reservation = token_slot_reserve(api_key=api_key)
    if on_slot is not None:
        on_slot(reservation)
    quota_wait(reservation)
    started = time.monotonic()
    status: int | None = HTTPStatus.OK
    error_key = ""
    try:
        return request(
            session=shared_session(read_timeout=TOKEN_READ_TIMEOUT),
            token_url=conf.cc_endpoints().token_url,
        )
    except OAuthError as exc:
        status, error_key = exc.status, exc.error
        raise
    except CCTransportError:
        status, error_key = None, NO_ANSWER_TIMEOUT
        raise
    finally:
        api_call_record(
            api_key=api_key,
            account=account,
            method="POST",
            path_template=TOKEN_PATH,
            status_code=status,
            error_key=error_key,
            latency_ms=int((time.monotonic() - started) * 1000),
            lane=Lane.INTERACTIVE,
            kind=CallKind.TOKEN,
        )


def _due_at(account: ConnectedAccount) -> dt.datetime | None:
    if account.access_expires_at is None:
        return None
    skew = conf.token_refresh_skew_seconds() + account.refresh_spread_seconds
    return account.access_expires_at - dt.timedelta(seconds=skew)


def token_is_due(account: ConnectedAccount, *, now: dt.datetime | None = None) -> bool:
    """True when the stored access token expires within the refresh skew (or is missing)."""
    due_at = _due_at(account)
    return not account.access_token or due_at is None or due_at <= (now or timezone.now())


def access_token(
    *, account: ConnectedAccount, stale_version: int | None = None, just_read: bool = False
) -> str:
    """A valid access token for ``account``; refreshes single-flight when it falls due.

    Pass ``stale_version`` (the ``token_version`` of a token CC just answered 401 to) to force
    one refresh — unless a sibling has already replaced that token, whose result is used.
    ``just_read``: ``account`` was read from the database a moment ago, in this request (the
    proxy reads it with the portal token), so its row is not read again first; a refresh
    reads it again all the same.
    """
    fresh = account if just_read and stale_version is None else _reload(account)
    _require_connected(fresh)
    forced = stale_version is not None and stale_version == fresh.token_version
    if not forced and not token_is_due(fresh):
        _copy_tokens(fresh, into=account)
        return fresh.access_token
    result = _refresh_single_flight(fresh, forced=forced)
    _copy_tokens(result, into=account)
    return result.access_token


def _reload(account: ConnectedAccount) -> ConnectedAccount:
    return ConnectedAccount.objects.select_related("api_key").get(pk=account.pk)


def _copy_tokens(source: ConnectedAccount, *, into: ConnectedAccount) -> None:
    if source is into:
        return
    for name in (
        "access_token",
        "refresh_token",
        "access_expires_at",
        "token_version",
        "status",
        "status_reason",
        "refresh_mode",
    ):
        setattr(into, name, getattr(source, name))


def _require_connected(account: ConnectedAccount) -> None:
    crypto.readable(account.refresh_token)
    crypto.readable(account.access_token)
    has_tokens = bool(account.refresh_token or account.access_token)
    if account.status != AccountStatus.ACTIVE or not has_tokens:
        raise AccountNotConnected(account)


def _refresh_single_flight(account: ConnectedAccount, *, forced: bool) -> ConnectedAccount:
    version = account.token_version
    owner = uuid.uuid4().hex
    deadline = time.monotonic() + conf.token_wait_seconds()
    pause = 0.05
    while True:
        now = timezone.now()
        current = _reload(account)
        if current.token_version != version:
            # A sibling refreshed (or the account was disconnected) while we looked.
            _require_connected(current)
            return current
        _require_connected(current)
        if not forced and not token_is_due(current, now=now):
            return current
        if current.refresh_backoff_until and current.refresh_backoff_until > now:
            return _old_token_or_fail(current, now=now)
        if _lease_take(current, owner=owner, now=now):
            try:
                return _refresh_holding_lease(current, owner=owner)
            except _LeaseLost:
                continue  # the new holder refreshes; wait for the version to move
        if time.monotonic() > deadline:
            return _old_token_or_fail(current, now=now)
        # Another process holds the lease: wait for the version to move.
        time.sleep(pause * (0.5 + random.random()))
        pause = min(pause * 1.5, 0.5)


def _old_token_or_fail(account: ConnectedAccount, *, now: dt.datetime) -> ConnectedAccount:
    if account.access_token and not account.is_access_token_expired(at=now):
        return account
    raise TokenRefreshFailed(
        f"The access token of {account} has expired and CC's token endpoint is not answering "
        "right now; ccportal retries with backoff."
    )


def _lease_take(account: ConnectedAccount, *, owner: str, now: dt.datetime) -> bool:
    """Compare-and-set: the lease is ours only if nobody refreshed and no live lease exists."""
    taken = ConnectedAccount.objects.filter(
        Q(refresh_lease_owner="") | Q(refresh_lease_expires_at__lt=now),
        pk=account.pk,
        token_version=account.token_version,
        status=AccountStatus.ACTIVE,
    ).update(
        refresh_lease_owner=owner,
        refresh_lease_expires_at=now + dt.timedelta(seconds=conf.token_lease_seconds()),
    )
    if taken:
        # Remember whether we took over from a holder that died mid-refresh: with rotating
        # refresh tokens CC may already have spent the token we are about to use.
        account.interrupted_refresh = bool(account.refresh_lease_owner)
    return bool(taken)


def _lease_release(account: ConnectedAccount, *, owner: str, **changes) -> int:
    return ConnectedAccount.objects.filter(
        pk=account.pk, token_version=account.token_version, refresh_lease_owner=owner
    ).update(refresh_lease_owner="", refresh_lease_expires_at=None, **changes)


@sensitive_variables()
def _refresh_holding_lease(account: ConnectedAccount, *, owner: str) -> ConnectedAccount:
    api_key = account.api_key
    old_refresh = account.refresh_token

    def hold_lease_through_the_wait(slot: Reservation) -> None:
        # In a storm the slot may be a minute away: the lease must outlive the wait, or a
        # sibling would take over and send the same refresh token a second time.
        until = timezone.now() + dt.timedelta(
            seconds=slot.remaining_wait() + conf.token_lease_seconds()
        )
        extended = ConnectedAccount.objects.filter(
            pk=account.pk, token_version=account.token_version, refresh_lease_owner=owner
        ).update(refresh_lease_expires_at=until)
        if not extended:
            raise _LeaseLost

    try:
        answer = token_endpoint_call(
            api_key=api_key,
            account=account,
            request=lambda **http: cc_oauth.token_refresh(
                client_id=api_key.client_id,
                client_secret=crypto.readable(api_key.client_secret),
                refresh_token=old_refresh,
                **http,
            ),
            on_slot=hold_lease_through_the_wait,
        )
    except OAuthError as exc:
        if exc.is_invalid_grant:
            return _on_invalid_grant(account, owner=owner, error=exc)
        return _on_refresh_unavailable(account, owner=owner, why=str(exc))
    except CCTransportError as exc:
        return _on_refresh_unavailable(account, owner=owner, why=str(exc))
    except BaseException:
        _lease_release(account, owner=owner)
        raise

    return _store_refreshed(account, owner=owner, answer=answer, old_refresh=old_refresh)


@sensitive_variables()
def _store_refreshed(
    account: ConnectedAccount, *, owner: str, answer: cc_oauth.TokenResponse, old_refresh: str
) -> ConnectedAccount:
    now = timezone.now()
    expires_at = access_token_peek_expiry(answer.access_token)
    try:
        expires_at = access_token_validate(answer.access_token).expires_at
    except Exception as exc:
        logger.error("CC issued an access token that does not validate for %s: %s", account, exc)
    new_refresh = answer.refresh_token or old_refresh
    if not answer.refresh_token:
        mode = account.refresh_mode
    elif answer.refresh_token == old_refresh:
        mode = RefreshMode.LONG_LIVED
    else:
        mode = RefreshMode.ROTATING
    changes = {
        "access_token": answer.access_token,
        "refresh_token": new_refresh,
        "access_expires_at": expires_at,
        "refresh_mode": mode,
        "refresh_token_last_used_at": now,
        "refresh_failures": 0,
        "refresh_backoff_until": None,
        "refresh_lease_owner": "",
        "refresh_lease_expires_at": None,
        "token_version": account.token_version + 1,
        "updated_at": now,
    }
    if answer.scopes:
        changes["scopes"] = list(answer.scopes)
    if new_refresh != old_refresh:
        changes["refresh_token_issued_at"] = now
    with transaction.atomic():
        # Fenced by the version only (not the lease owner): if our lease expired but nobody
        # has written since, these tokens are the newest CC issued and must be kept.
        written = ConnectedAccount.objects.filter(
            pk=account.pk, token_version=account.token_version
        ).update(**changes)
    if not written:
        logger.warning("A newer token pair was stored for %s while refreshing; using it.", account)
    return _reload(account)


def _on_invalid_grant(
    account: ConnectedAccount, *, owner: str, error: OAuthError
) -> ConnectedAccount:
    current = _reload(account)
    if current.token_version != account.token_version:
        # A sibling refreshed with the same (rotating) token first: its pair is the good one.
        _require_connected(current)
        return current
    reason = (
        f"Constant Contact refused the refresh token (invalid_grant) on "
        f"{timezone.now():%Y-%m-%d %H:%M} UTC. "
    )
    if (
        getattr(account, "interrupted_refresh", False)
        and account.refresh_mode != RefreshMode.LONG_LIVED
    ):
        reason += (
            "An earlier refresh was interrupted after CC may have rotated the token, so the "
            "stored one was already spent. "
        )
    reason += "Reconnect the account to continue."
    if account.refresh_mode != RefreshMode.LONG_LIVED:
        reason += (
            " Tip: CC's long-lived refresh tokens (app setting) survive an interrupted refresh."
        )
    ConnectedAccount.objects.filter(pk=account.pk, token_version=account.token_version).update(
        status=AccountStatus.NEEDS_RECONNECT,
        status_reason=reason,
        refresh_lease_owner="",
        refresh_lease_expires_at=None,
        token_version=account.token_version + 1,
    )
    logger.warning("Account %s needs a reconnect: CC answered invalid_grant.", account)
    current = _reload(account)
    account_health_emit(account=current)
    raise AccountNotConnected(current)


def _on_refresh_unavailable(account: ConnectedAccount, *, owner: str, why: str) -> ConnectedAccount:
    failures = account.refresh_failures + 1
    delay = min(MAX_BACKOFF_SECONDS, 2.0 ** min(failures, 8)) * (0.5 + random.random() / 2)
    _lease_release(
        account,
        owner=owner,
        refresh_failures=failures,
        refresh_backoff_until=timezone.now() + dt.timedelta(seconds=delay),
    )
    logger.warning("Token refresh for %s failed (%s); retrying in %.0f s.", account, why, delay)
    return _old_token_or_fail(_reload(account), now=timezone.now())


@sensitive_variables()
def tokens_store_new_connection(
    *, account: ConnectedAccount, answer: cc_oauth.TokenResponse, expires_at: dt.datetime
) -> None:
    """Write the pair a connect (code exchange) produced, moving the version once."""
    now = timezone.now()
    account.access_token = answer.access_token
    account.refresh_token = answer.refresh_token
    account.access_expires_at = expires_at
    account.refresh_token_issued_at = now if answer.refresh_token else None
    account.refresh_token_last_used_at = None
    account.refresh_failures = 0
    account.refresh_backoff_until = None
    account.refresh_lease_owner = ""
    account.refresh_lease_expires_at = None
    account.status = AccountStatus.ACTIVE
    account.status_reason = ""
    account.connected_at = now
    account.token_version = (account.token_version or 0) + 1
    account.save()


def tokens_keep_alive(*, idle_days: int | None = None) -> list[tuple[ConnectedAccount, str]]:
    """Exercise refresh tokens idle for ``idle_days`` (default 150), before CC's 180-day
    expiry kills them. Returns (account, outcome) pairs."""
    idle_days = conf.token_keepalive_idle_days() if idle_days is None else idle_days
    cutoff = timezone.now() - dt.timedelta(days=idle_days)
    idle = (
        ConnectedAccount.objects.filter(status=AccountStatus.ACTIVE)
        .exclude(refresh_token="")
        .filter(
            Q(refresh_token_last_used_at__lt=cutoff)
            | Q(refresh_token_last_used_at__isnull=True, refresh_token_issued_at__lt=cutoff)
        )
    )
    outcomes = []
    for account in idle.select_related("api_key"):
        try:
            access_token(account=account, stale_version=account.token_version)
            outcomes.append((account, "refreshed"))
        except (AccountNotConnected, TokenRefreshFailed) as exc:
            outcomes.append((account, str(exc)))
    return outcomes

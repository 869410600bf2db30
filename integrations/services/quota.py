"""Per-key quota: every call to CC books a send slot and a unit of the day's budget first.

CC limits each API key (client_id) to ``per_second`` calls in any second and ``per_day`` calls
per UTC day, shared by every account, process and host using the key, and answers 429 beyond
them without warning (https://developer.constantcontact.com/api_guide/rate_limits.html).
So no call leaves before it is booked against one shared ledger (the store named by
``CC_QUOTA_STORE``, see :mod:`integrations.services.quota_stores`):

* :func:`quota_reserve` books, in one atomic step of the store, the next send slot and one unit
  of today's budget; :func:`quota_wait` sleeps until the slot; :func:`quota_acquire` does both.
* Slots are ``1/per_second * (1 + margin)`` apart, so no 1-second window at CC sees more than
  ``per_second`` calls unless arrival jitter exceeds ``margin`` seconds.
* Today's count never passes the budget; the ``background`` lane stops short of it, keeping
  ``CC_QUOTA_INTERACTIVE_RESERVE`` of the day for ``interactive`` calls, and yields them the
  key: an interactive call waits at most about ``CC_QUOTA_BACKGROUND_HORIZON`` + one spacing.
* Calls within ``CC_QUOTA_DAY_GUARD`` seconds of 00:00 UTC count against both days.
* The gateway's answers to CC's 429s reach every process: :func:`quota_pause` and
  :func:`quota_widen_margin` (``throttled``), :func:`quota_stop_until_next_day`
  (``quota_exceeded``, lifted early only by :func:`quota_resume`).
* Background calls booked for an account share the key with the key's other accounts by
  weight (fair share), and an account may have a daily cap of its own: pass ``account=``.
  :class:`AccountCapReached` is :class:`QuotaExhausted` for one account's cap.
* CC's token endpoint has its own 1/s limiter: :func:`token_slot_acquire`.
* When the store cannot be reached no call is booked: :class:`QuotaStoreUnavailable`.

The rules themselves, and why they hold, are in :mod:`.quota_stores.rules`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from integrations import conf
from integrations.models import ApiKey, ConnectedAccount, Lane
from integrations.services.quota_answers import (
    AccountCapReached,
    QuotaBusy,
    QuotaDeferred,
    QuotaExhausted,
    Reservation,
)
from integrations.services.quota_stores import (
    Booking,
    KeyQuota,
    Outcome,
    QuotaError,
    QuotaStore,
    QuotaStoreUnavailable,
    rules,
)
from integrations.services.quota_stores.rules import AccountShare

logger = logging.getLogger(__name__)

TOKEN_LANE = "token"
# Token requests are rare, so their spacing can afford a wide margin: a refresh leaves its slot
# after a database read and a TLS handshake, and on a busy host that takes longer than the API
# margin allows. A quarter second keeps two arrivals at CC more than a second apart.
TOKEN_MARGIN = 0.25
RESET_SPREAD_SECONDS = 1.0

__all__ = [
    "AccountCapReached",
    "QuotaBusy",
    "QuotaDeferred",
    "QuotaError",
    "QuotaExhausted",
    "QuotaStoreUnavailable",
    "Reservation",
    "account_cap",
    "account_share",
    "key_quota",
    "quota_account_usage",
    "quota_acquire",
    "quota_pause",
    "quota_reserve",
    "quota_resume",
    "quota_stop_until_next_day",
    "quota_store",
    "quota_usage",
    "quota_wait",
    "quota_widen_margin",
    "token_slot_acquire",
    "token_slot_reserve",
]


@dataclass(frozen=True)
class _Policy:
    margin: float
    interactive_reserve: float
    horizon: float
    day_guard: float
    fair_share: bool


# Read once per process (and again when a test changes a setting): every call to CC passes
# here, and settings never change at runtime.
@functools.lru_cache(maxsize=1)
def _policy() -> _Policy:
    return _Policy(
        margin=max(conf.quota_margin(), 0.0),
        interactive_reserve=min(max(conf.quota_interactive_reserve(), 0.0), 1.0),
        horizon=max(conf.quota_background_horizon(), 0.0),
        day_guard=max(conf.quota_day_guard(), 0.0),
        fair_share=conf.quota_fair_share(),
    )


@functools.lru_cache(maxsize=1)
def quota_store() -> QuotaStore:
    """The store ``CC_QUOTA_STORE`` names, one per process."""
    path = conf.quota_store_path()
    try:
        store_class = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"CC_QUOTA_STORE {path!r} cannot be imported: {exc}") from exc
    if not (isinstance(store_class, type) and issubclass(store_class, QuotaStore)):
        raise ImproperlyConfigured(f"CC_QUOTA_STORE {path!r} is not a QuotaStore subclass.")
    return store_class()


@receiver(setting_changed)
def _forget_configuration(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("CC_QUOTA") or setting == "REDIS_URL":
        _policy.cache_clear()
        quota_store.cache_clear()
        _account_policies.clear()


def key_quota(api_key: ApiKey) -> KeyQuota:
    """``api_key``'s limits with the configured policy: what the store books against."""
    per_second, per_day = api_key.per_second, api_key.per_day
    if per_second < 1 or per_day < 1:
        raise ImproperlyConfigured(
            f"API key {api_key.client_id} has no usable limits ({per_second}/s, {per_day}/day)."
        )
    policy = _policy()
    # The small epsilon keeps 10,000 * 0.05 at 500, not 501, despite binary floats.
    reserve = min(per_day, math.ceil(per_day * policy.interactive_reserve - 1e-9))
    return KeyQuota(
        ledger_id=api_key.pk,
        client_id=api_key.client_id,
        per_second=per_second,
        per_day=per_day,
        background_per_day=per_day - reserve,
        margin=policy.margin,
        horizon=policy.horizon,
        day_guard=policy.day_guard,
        token_spacing=(1.0 + TOKEN_MARGIN) / conf.token_requests_per_second(),
        fair_share=policy.fair_share,
    )


@dataclass(frozen=True)
class _AccountPolicy:
    name: str
    weight: int
    daily_cap: int | None
    daily_share: float | None
    read_at: float


_account_policies: dict[int, _AccountPolicy] = {}


def _account_policy(account: ConnectedAccount) -> _AccountPolicy:
    """The account's weight and caps, read again from the database every
    ``CC_QUOTA_ACCOUNT_REFRESH`` seconds, so a change made anywhere takes effect in every
    process within that time without a restart."""
    known = _account_policies.get(account.pk)
    if known is not None and time.monotonic() - known.read_at < conf.quota_account_refresh():
        return known
    row = (
        ConnectedAccount.objects.filter(pk=account.pk)
        .values_list("share_weight", "daily_cap", "daily_share")
        .first()
    )
    weight, daily_cap, daily_share = row or (
        account.share_weight,
        account.daily_cap,
        account.daily_share,
    )
    policy = _AccountPolicy(
        name=account.display_name,
        weight=max(int(weight or 1), 1),
        daily_cap=daily_cap,
        daily_share=daily_share,
        read_at=time.monotonic(),
    )
    _account_policies[account.pk] = policy
    return policy


def account_cap(account: ConnectedAccount, quota: KeyQuota) -> int | None:
    """The account's daily cap in calls on its key (see ``ConnectedAccount.daily_cap_for``)."""
    policy = _account_policy(account)
    caps = [c for c in (policy.daily_cap,) if c is not None]
    if policy.daily_share is not None:
        caps.append(math.floor(quota.per_day * policy.daily_share + 1e-9))
    return min(caps) if caps else None


def account_share(
    account: ConnectedAccount,
    quota: KeyQuota,
    *,
    ticket: float | None = None,
    proxy_token_id: int = 0,
) -> AccountShare:
    """What the store books ``account``'s call with: its weight, cap, ticket and flow (the
    portal token the call came through, 0 for the portal's own calls)."""
    return AccountShare(
        account_id=account.pk,
        weight=float(_account_policy(account).weight),
        cap=account_cap(account, quota),
        ticket=ticket,
        token_id=proxy_token_id,
    )


def quota_reserve(
    *,
    api_key: ApiKey,
    lane: str = Lane.INTERACTIVE,
    account: ConnectedAccount | None = None,
    ticket: float | None = None,
    proxy_token_id: int = 0,
    max_wait: float | None = None,
) -> Reservation:
    """Book the next send slot and one unit of today's budget for ``api_key``.

    Both are taken in one atomic step of the shared store, or neither: no two callers anywhere
    get the same slot, and today's count never passes the lane's budget (the last unit goes to
    exactly one caller; the others get :class:`QuotaExhausted`). Nothing is polled and nothing
    is checked before it is written.

    An interactive call always gets the next slot. A background call only gets a slot that
    starts within the background horizon and, booked for ``account``, only when it is that
    account's turn in the key's fair share; otherwise :class:`QuotaDeferred` gives it a turn,
    the moment to ask again, with its ``ticket`` as ``ticket=``. ``proxy_token_id`` names the
    portal token a proxied call came through: each token's calls take an even part of their
    account's share (see ``quota_stores.rules``). An interactive call whose slot is more than
    ``max_wait`` seconds away books nothing and gets :class:`QuotaBusy` (decided in the same
    atomic step, so no caller is ever given a slot beyond its bound); booked for ``account``,
    so does one whose turn in the fair share is further away than that, so a flow flooding the
    bound leaves the other flows their share of it. An account past its daily
    cap gets :class:`AccountCapReached`. Raises :class:`QuotaStoreUnavailable` when the store
    cannot be reached.
    """
    background = _is_background(lane)
    quota = key_quota(api_key)
    share = (
        account_share(account, quota, ticket=ticket, proxy_token_id=proxy_token_id)
        if account is not None
        else None
    )
    booking = quota_store().reserve(quota, background=background, share=share, max_wait=max_wait)
    if booking.outcome is Outcome.GRANTED:
        return Reservation(
            api_key_id=api_key.pk,
            lane=lane,
            send_at=booking.at,
            wait=booking.wait,
            day=rules.day_date(booking.day),
            day_count=booking.day_count,
        )
    if booking.outcome is Outcome.DEFERRED:
        raise QuotaDeferred(not_before=booking.at, wait=booking.wait, ticket=booking.ticket)
    if booking.outcome is Outcome.BUSY:
        raise QuotaBusy(
            client_id=quota.client_id, lane=lane, wait=booking.wait, max_wait=max_wait or 0.0
        )
    if booking.outcome is Outcome.CAPPED and account is not None and share is not None:
        raise AccountCapReached(
            account=account.display_name,
            cap=share.cap or 0,
            reset_at=_utc((booking.day + 1) * rules.SECONDS_PER_DAY),
            retry_at=_utc(booking.at),
            wait=booking.wait,
            client_id=quota.client_id,
            lane=lane,
            day_count=booking.day_count,
        )
    raise _exhausted(quota, booking, lane)


def quota_wait(reservation: Reservation) -> None:
    """Sleep until the reservation's slot; never returns before it."""
    remaining = reservation.remaining_wait()
    if remaining > 0:
        time.sleep(remaining)


def quota_acquire(
    *,
    api_key: ApiKey,
    lane: str = Lane.INTERACTIVE,
    account: ConnectedAccount | None = None,
    wait_for_reset: bool = False,
    max_wait: float | None = None,
    proxy_token_id: int = 0,
) -> Reservation:
    """Reserve a slot (see :func:`quota_reserve`) and sleep until it; then send at once.

    Deferred background callers sleep until their turn and ask again with it. When the lane's
    budget (or the account's cap) is spent, :class:`QuotaExhausted` names the reset:
    interactive callers show it; background jobs wait for it by parking until ``retry_at``
    (freeing their worker). ``wait_for_reset=True`` instead sleeps here until the budget
    reopens and carries on. The reservation's ``waited`` is how long all this took.

    ``max_wait`` (seconds) bounds the wait: when the slot would come later, nothing is booked
    and :class:`QuotaBusy` says when to ask again. The store decides it for an interactive call
    in the booking itself; a background call learns it from its deferral, which books nothing.
    """
    started = time.monotonic()
    ticket: float | None = None
    background = _is_background(lane)
    while True:
        left = None
        if max_wait is not None and not background:
            left = max(0.0, max_wait - (time.monotonic() - started))
        try:
            reservation = quota_reserve(
                api_key=api_key,
                lane=lane,
                account=account,
                ticket=ticket,
                proxy_token_id=proxy_token_id,
                max_wait=left,
            )
        except QuotaBusy as busy:
            elapsed = time.monotonic() - started
            raise QuotaBusy(
                client_id=api_key.client_id,
                lane=lane,
                wait=elapsed + busy.wait,
                max_wait=max_wait or 0.0,
            ) from None
        except QuotaDeferred as deferred:
            if max_wait is not None and time.monotonic() - started + deferred.wait > max_wait:
                raise QuotaBusy(
                    client_id=api_key.client_id,
                    lane=lane,
                    wait=time.monotonic() - started + deferred.wait,
                    max_wait=max_wait,
                ) from None
            ticket = deferred.ticket
            time.sleep(deferred.wait)
            continue
        except QuotaExhausted as exhausted:
            if not wait_for_reset:
                raise
            logger.info("%s Waiting %.0f s for it.", exhausted, exhausted.wait)
            time.sleep(exhausted.wait + random.uniform(0, RESET_SPREAD_SECONDS))
            ticket = None
            continue
        quota_wait(reservation)
        return dataclasses.replace(reservation, waited=time.monotonic() - started)


def quota_pause(*, api_key: ApiKey, seconds: float = 1.0) -> dt.datetime:
    """No process books a slot on ``api_key`` that starts before ``seconds`` from now.

    For an unexpected 429 ``throttled``. Returns when the pause ends. Reservations granted
    before the pause keep their slots (background ones reach at most the horizon ahead).
    """
    quota = key_quota(api_key)
    return _utc(quota_store().pause(quota, seconds=seconds))


def quota_widen_margin(
    *,
    api_key: ApiKey,
    step: float | None = None,
    factor: float = 1.0,
    maximum: float | None = None,
) -> float:
    """Widen ``api_key``'s slot spacing for every process: margin ← min(maximum, margin *
    factor + step), persisted in the ledger, never narrowed. Calls within a second of the last
    widening change nothing (one burst of 429s is one mistake). Returns the margin in force.
    """
    quota = key_quota(api_key)
    return quota_store().widen_margin(
        quota,
        factor=factor,
        step=conf.quota_margin_step() if step is None else step,
        maximum=conf.quota_margin_max() if maximum is None else maximum,
    )


def quota_stop_until_next_day(*, api_key: ApiKey) -> dt.datetime:
    """Refuse every booking on ``api_key`` until CC's day resets (CC answered 429
    ``quota_exceeded``, whatever our count says). Returns the reset (00:00 UTC); bookings
    reopen at the reset plus the day guard."""
    quota = key_quota(api_key)
    reopens = quota_store().stop_day(quota)
    return _utc(round(reopens - quota.day_guard))


def quota_resume(*, api_key: ApiKey) -> None:
    """Lift :func:`quota_stop_until_next_day` on ``api_key`` (an operator knows CC has budget
    again): calls book against what is left of today's budget. Should CC refuse again, the
    gateway stops the key again."""
    quota_store().resume(key_quota(api_key))


def quota_usage(*, api_key: ApiKey) -> dict[str, Any]:
    """Today's ledger for ``api_key``: booked and remaining calls, pause, margin, spacing."""
    quota = key_quota(api_key)
    ledger, now = quota_store().read(quota)
    day = max(ledger.day, rules.day_number(now - quota.day_guard))
    booked = ledger.day_count if ledger.day == day else 0
    stopped = ledger.stopped_until > now
    margin = rules.effective_margin(ledger, quota)
    return {
        "client_id": quota.client_id,
        "day": rules.day_date(day),
        "per_second": quota.per_second,
        "per_day": quota.per_day,
        "booked": booked,
        "remaining": 0 if stopped else max(0, quota.per_day - booked),
        "background_remaining": 0 if stopped else max(0, quota.background_per_day - booked),
        "interactive_reserve": quota.per_day - quota.background_per_day,
        "booked_next_day": ledger.next_day_count if ledger.day == day else 0,
        "paused_until": _utc(ledger.paused_until) if ledger.paused_until > now else None,
        "stopped_until": _utc(ledger.stopped_until) if stopped else None,
        "margin": margin,
        "spacing": (1.0 + margin) / quota.per_second,
        "next_slot_at": _utc(ledger.next_slot_at) if ledger.next_slot_at > now else None,
        "reset_at": _utc((day + 1) * rules.SECONDS_PER_DAY),
    }


def quota_account_usage(*, api_key: ApiKey) -> dict[int, dict[str, Any]]:
    """Each account's part of ``api_key``'s ledger today: ``{account_id: {"booked", "cap",
    "weight", "remaining"}}`` (``cap``/``remaining`` None without a cap), for every account of
    the key, booked or not."""
    quota = key_quota(api_key)
    ledgers, _ = quota_store().read_accounts(quota)
    usage = {}
    for account in api_key.accounts.all():
        ledger = ledgers.get(account.pk)
        booked = ledger.day_count if ledger else 0
        cap = account_cap(account, quota)
        usage[account.pk] = {
            "booked": booked,
            "cap": cap,
            "weight": _account_policy(account).weight,
            "remaining": None if cap is None else max(0, cap - booked),
        }
    return usage


def quota_account_remaining(
    *, account: ConnectedAccount, lane: str = Lane.BACKGROUND
) -> dict[str, Any]:
    """What ``account`` may still spend today on ``lane``: the lane's remaining budget on its
    key, and no more than what its own cap leaves. ``{"remaining", "per_day", "cap"}``:
    ``per_day`` is the most the lane can spend for it in a whole day."""
    usage = quota_usage(api_key=account.api_key)
    background = _is_background(lane)
    remaining = int(usage["background_remaining" if background else "remaining"])
    per_day = int(usage["per_day"]) - (int(usage["interactive_reserve"]) if background else 0)
    quota = key_quota(account.api_key)
    cap = account_cap(account, quota)
    if cap is not None:
        ledgers, _ = quota_store().read_accounts(quota)
        booked = ledgers[account.pk].day_count if account.pk in ledgers else 0
        remaining = min(remaining, max(0, cap - booked))
        per_day = min(per_day, cap)
    return {"remaining": remaining, "per_day": max(per_day, 1), "cap": cap}


def token_slot_reserve(*, api_key: ApiKey) -> Reservation:
    """Book the next slot on CC's token endpoint for ``api_key``'s client_id.

    Slots are at least ``(1 + TOKEN_MARGIN) / CC_TOKEN_REQUESTS_PER_SECOND`` apart across
    every process;
    they spend no daily budget and ignore API pauses. Raises :class:`QuotaStoreUnavailable`.
    """
    booking = quota_store().reserve_token_slot(key_quota(api_key))
    return Reservation(
        api_key_id=api_key.pk, lane=TOKEN_LANE, send_at=booking.at, wait=booking.wait
    )


def token_slot_acquire(*, api_key: ApiKey) -> Reservation:
    """Book a token-endpoint slot and sleep until it."""
    reservation = token_slot_reserve(api_key=api_key)
    quota_wait(reservation)
    return reservation


def _is_background(lane: str) -> bool:
    return Lane.check(lane) == Lane.BACKGROUND


def _exhausted(quota: KeyQuota, booking: Booking, lane: str) -> QuotaExhausted:
    return QuotaExhausted(
        reset_at=_utc((booking.day + 1) * rules.SECONDS_PER_DAY),
        retry_at=_utc(booking.at),
        wait=booking.wait,
        client_id=quota.client_id,
        lane=lane,
        day_count=booking.day_count,
        budget=quota.budget(background=lane == Lane.BACKGROUND),
        stopped=booking.outcome is Outcome.STOPPED,
    )


def _utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC)

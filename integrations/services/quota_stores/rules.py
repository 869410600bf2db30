"""The booking rules every quota store applies to one key's ledger, as pure functions.

The database store runs these inside one locked transaction, except that on PostgreSQL a
reservation is one SQL statement; the Redis store runs them as Lua scripts. Keep the copies of
:func:`book_call` (here, ``database.py``, ``redis.py``) in step: the shared store test suite
holds every store to the same answers. Times are epoch seconds on the store's clock; days are
UTC day numbers (``floor(t / 86400)``).

Slots. Calls are spaced ``(1 + margin) / per_second`` apart, so any ``per_second + 1``
consecutive calls span ``1 + margin`` seconds: a 1-second window at CC can only see one call too
many if one call's send-to-arrival delay exceeds a later one's by more than ``margin`` seconds.
A call's slot is ``max(now, next_slot_at, paused_until)``; booking it moves ``next_slot_at``
one spacing past it.

Lanes. Interactive calls book the next slot, unless the caller bounds its wait (``max_wait``)
and the slot is further away (or, booked for an account with fair share on, its turn: see
below): then nothing is booked and the answer is ``BUSY``, decided in the same atomic step as
every booking, so however many callers ask at once none is given a slot beyond its bound. A background call books only a slot that
starts within ``horizon`` seconds of now; otherwise no slot is booked and it takes a place in
the background line: it is told to come back at ``max(slot - horizon, background_line_at)``,
and ``background_line_at`` moves one spacing past that. Background traffic therefore never
queues more than ``horizon`` ahead, and an interactive call arriving behind it waits at most
about ``horizon + spacing``. The line makes each waiting background caller come back once, when
its slot is within reach, instead of every waiter asking again at every slot (eight processes
on one key would otherwise ask eight times per call sent). A waiter that never comes back
costs one spacing of the key's time, once. Background calls also stop at
``background_per_day``, keeping the rest of the day's budget for interactive calls.

Days. CC counts a call against the UTC day in which it arrives by CC's clock. A call sent within
``day_guard`` seconds of 00:00 UTC may land on either side of midnight (clock skew, latency), so
it is counted against both days: the day before can never be overrun by a clock that rolled
early, and the day after starts with the calls that may have landed in it. The ledger's day
therefore rolls at 00:00 UTC + ``day_guard``; ``next_day_count`` holds the calls already
counted against the day after.

Stops. When CC answers ``quota_exceeded`` its day is spent whatever our count says:
``stopped_until`` (the day's reopening) refuses every booking whose slot is before it, in both
lanes, until it passes or an operator lifts it.

Fair share between accounts (background lane; bounded interactive calls below). Each account
connected through the key keeps a clock of *turns* on the key (:class:`AccountLedger`), one
turn per call it books in fair share. At each of its bookings the clock is re-anchored at now
and set to run at ``w / (spacing * W)`` turns per
second, where ``w`` is the account's weight and ``W`` the summed weight of the accounts active
on the key (the account itself and every other whose ``active_until`` lies in the future). A
new call takes the account's next turn (its *ticket*); while the clock is within the horizon of
the ticket the call may take a slot, otherwise it is told to come back when the clock reaches
it. So while ``n`` accounts of equal weight are backlogged, each account's clock hands out one
turn per ``n`` spacings and the clocks together one per spacing, whatever their number of
callers: an account's callers and jobs queue behind each other on their account's clock, FIFO,
and no caller of another account waits for them. This is Zhang's VirtualClock per account, with
the clock rescaled whenever ``W`` changes: a caller whose ticket was given when the key was
quieter comes back, finds the clock slower than promised, and is told its new time, so an
account that arrives is served from its first call; an account that falls idle stops counting
in ``W`` after its last turn, and the others' clocks speed up at their next booking (work
conserving). An idle account saves up no turns (its next turn is never behind its clock). A
caller whose turn has come but whose slot went to another waits in the key's background line
(above), keeping its ticket. A key whose next slot passed unclaimed serves whoever asks. With
one account on the key ``W = w``, the clock runs at one turn per spacing and bookings are as
without accounts. Interactive calls keep their priority and reserve: an unbounded one (the
portal's pages and services) ignores the clocks.

Fair share of bounded interactive calls (the proxy's). Applications mostly call through the
proxy on the interactive lane, each call bounded by the lane's maximum wait, and a loop there
must not take the key from the other accounts and tokens either. So a bounded interactive call
takes its flow's next turn too, on the same clock as the flow's background calls, and is
granted the key's next slot only while that turn is within its bound of the clock (``reach =
clock + max_wait * rate``); otherwise nothing is booked and the answer is ``BUSY`` at the time
the turn comes (the caller may ask again once it is within the bound). A flow can therefore
hold at most its share of the slots within the bound, and another flow's call finds a slot
within its own bound rather than behind a whole bound's worth of the first. A key whose slot
went by unclaimed serves whoever asks, here too (the turn is taken all the same, as in the
background lane). Alone on the key a flow's clock runs at one turn per spacing and the turn
bound is the slot bound: bookings are as without accounts.

Flows within an account. An account's calls reach the key through several doors: the portal's
own code (jobs, views, the service layer) and each portal token of the proxy. Each door is a
*flow* of the account with a clock of its own, and the account's share is split evenly between
its active flows: a flow's clock runs at ``w / ((1 + s) * spacing * W)``, ``s`` being the
number of the account's other flows active now and ``W`` counting each active account's weight
once, whatever its number of flows. So one app calling through a token in a tight loop cannot
take the slots of another app on the same account, nor of the account's own bulk jobs; and an
account cannot win a larger share of the key by spreading its calls over several tokens. With
one flow per account this is the account's clock above.

Account caps. An account may have a daily cap (calls); its count for the key's current day is
kept with its flows' clocks and written in the same atomic step as the key's. The cap counts
every flow of the account. A booking that would pass it is refused with ``CAPPED`` in both lanes
until the day reopens, like a spent key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

SECONDS_PER_DAY = 86_400

# Throttled 429s from one burst arrive together from every process: one burst widens once.
WIDEN_COOLDOWN_SECONDS = 1.0

# A caller back exactly at its turn must find it reached, whatever the float rounding.
TURN_TOLERANCE = 1e-4


@dataclass(frozen=True)
class KeyQuota:
    """One key's limits and the policy to book them with: everything a store needs to decide."""

    ledger_id: int
    client_id: str
    per_second: int
    per_day: int
    background_per_day: int
    margin: float
    horizon: float
    day_guard: float
    token_spacing: float
    #: Background calls booked for an account share the key by weight (else first come, first
    #: served, as bookings without an account always are).
    fair_share: bool = True

    def budget(self, *, background: bool) -> int:
        return self.background_per_day if background else self.per_day


@dataclass(frozen=True)
class Ledger:
    """One key's shared state. ``day`` 0 means nothing has been counted yet."""

    next_slot_at: float = 0.0
    day: int = 0
    day_count: int = 0
    next_day_count: int = 0
    paused_until: float = 0.0
    margin: float = 0.0
    margin_widened_at: float = 0.0
    stopped_until: float = 0.0
    token_next_slot_at: float = 0.0
    background_line_at: float = 0.0


@dataclass(frozen=True)
class AccountShare:
    """The account a call is booked for, as the service asks: its weight, its daily cap (calls,
    None for none), the ticket of a caller back at its turn (None for a new call), and the
    flow the call belongs to (the portal token it came through; 0 for the portal's own)."""

    account_id: int
    weight: float = 1.0
    cap: int | None = None
    ticket: float | None = None
    token_id: int = 0


@dataclass(frozen=True)
class AccountLedger:
    """One flow's line and day count on one key (an account's calls through one door; see the
    module's docstring). ``day`` 0: nothing counted yet.

    Its clock counts turns (one per call booked in fair share): ``anchor_turn`` at ``anchor_at``, then
    ``rate`` turns per second. ``next_turn`` is the turn its next new call gets. The account is
    active (its ``weight`` counts in the key's W) while ``active_until`` is in the future.
    """

    active_until: float = 0.0
    anchor_at: float = 0.0
    anchor_turn: float = 0.0
    rate: float = 0.0
    next_turn: float = 0.0
    weight: float = 1.0
    day: int = 0
    day_count: int = 0


class Outcome(StrEnum):
    GRANTED = "granted"
    DEFERRED = "deferred"
    EXHAUSTED = "exhausted"
    STOPPED = "stopped"
    CAPPED = "capped"
    BUSY = "busy"


@dataclass(frozen=True)
class Booking:
    """A store's answer to a reservation.

    ``at`` is the slot when GRANTED (and the slot that was too far when BUSY), the caller's
    turn in the background line when DEFERRED, and the moment the spent day reopens when
    EXHAUSTED or STOPPED. ``day``/``day_count`` are
    the day counted against and its count including this call (GRANTED), or the spent day and
    its count. ``now`` is the store clock the decision was taken at: ``at - now`` is the wait.
    """

    outcome: Outcome
    now: float
    at: float
    day: int = 0
    day_count: int = 0
    #: DEFERRED for an account: the turn to come back with (``AccountShare.ticket``).
    ticket: float | None = None

    @property
    def wait(self) -> float:
        return max(0.0, self.at - self.now)


def in_fair_share(quota: KeyQuota, background: bool, max_wait: float | None) -> bool:
    """Whether a call booked for an account takes turns in the key's fair share: background
    calls, and interactive ones with a bound on their wait (see the module's docstring)."""
    return quota.fair_share and (background or max_wait is not None)


def busy_retry_after(wait: float, max_wait: float) -> int:
    """The whole seconds after which a caller told ``BUSY`` (its call would wait ``wait``,
    more than its ``max_wait``) should ask again: HTTP's ``Retry-After`` for it."""
    return max(1, math.ceil(wait - max_wait))


def day_number(at: float) -> int:
    return math.floor(at / SECONDS_PER_DAY)


def day_date(number: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=number)


def date_day_number(date: dt.date) -> int:
    return (date - dt.date(1970, 1, 1)).days


def reopens_at(day: int, quota: KeyQuota) -> float:
    """When a booking no longer counts against ``day``: its midnight plus the guard."""
    return (day + 1) * SECONDS_PER_DAY + quota.day_guard


def effective_margin(ledger: Ledger, quota: KeyQuota) -> float:
    return max(ledger.margin, quota.margin)


def rolled(ledger: Ledger, day: int) -> Ledger:
    """The ledger with ``day`` as its current day (never rolls backwards)."""
    if day <= ledger.day:
        return ledger
    carried = ledger.next_day_count if day == ledger.day + 1 else 0
    return dataclasses.replace(ledger, day=day, day_count=carried, next_day_count=0)


def book_call(
    ledger: Ledger,
    quota: KeyQuota,
    *,
    background: bool,
    now: float,
    share: AccountShare | None = None,
    account: AccountLedger | None = None,
    others_weight: float = 0.0,
    siblings: Sequence[AccountLedger] = (),
    max_wait: float | None = None,
) -> tuple[Ledger | None, AccountLedger | None, Booking]:
    """Book the next slot and one unit of the day's budget, or say why not.

    ``share`` names the account booked for (None: the key alone, first come first served);
    ``account`` is the ledger of its flow on this key (``share.token_id``), ``siblings`` those
    of the account's other flows, and ``others_weight`` the summed weight of the other accounts
    active on the key at ``now`` (each once). ``max_wait`` bounds an interactive call's wait for
    its slot (BUSY beyond it; background calls learn their wait from their deferral). Returns
    the new key ledger and flow ledger (None when unchanged) and the answer. Never counts past the lane's budget or the account's cap;
    never grants a slot closer than one spacing to the previous one. A deferral books no slot
    and no budget; it only moves the lines on.
    """
    spacing = (1.0 + effective_margin(ledger, quota)) / quota.per_second
    slot = max(now, ledger.next_slot_at, ledger.paused_until)
    # A clock that stepped backwards must not reopen a day already counted.
    first_day = max(day_number(slot - quota.day_guard), ledger.day)
    last_day = max(day_number(slot + quota.day_guard), first_day)
    current = rolled(ledger, first_day)
    if slot < ledger.stopped_until:
        return (
            None,
            None,
            Booking(Outcome.STOPPED, now, ledger.stopped_until, first_day, current.day_count),
        )
    budget = quota.budget(background=background)
    if current.day_count >= budget:
        return (
            None,
            None,
            Booking(
                Outcome.EXHAUSTED,
                now,
                reopens_at(first_day, quota),
                first_day,
                current.day_count,
            ),
        )
    straddles = last_day > first_day
    if straddles and current.next_day_count >= budget:
        return (
            None,
            None,
            Booking(
                Outcome.EXHAUSTED,
                now,
                reopens_at(last_day, quota),
                last_day,
                current.next_day_count,
            ),
        )
    mine = account_rolled(account or AccountLedger(), first_day) if share else None
    if share and mine and share.cap is not None:
        spent = mine.day_count + sum(
            account_rolled(sibling, first_day).day_count for sibling in siblings
        )
        if spent >= share.cap:
            return (
                None,
                None,
                Booking(Outcome.CAPPED, now, reopens_at(first_day, quota), first_day, spent),
            )
    fair = share is not None and mine is not None and in_fair_share(quota, background, max_wait)
    active_siblings = sum(1 for sibling in siblings if sibling.active_until > now)
    if fair and not background:
        return _book_bounded_fair(
            current,
            mine,
            share,
            now=now,
            slot=slot,
            spacing=spacing,
            first_day=first_day,
            straddles=straddles,
            others_weight=others_weight,
            active_siblings=active_siblings,
            max_wait=max_wait,
        )
    if not background and max_wait is not None and slot - now > max_wait:
        return None, None, Booking(Outcome.BUSY, now, slot, first_day, current.day_count)
    if fair and background:
        return _book_fair(
            current,
            mine,
            quota,
            share,
            now=now,
            slot=slot,
            spacing=spacing,
            first_day=first_day,
            straddles=straddles,
            others_weight=others_weight,
            active_siblings=active_siblings,
        )
    if background and slot > now + quota.horizon:
        turn = max(slot - quota.horizon, current.background_line_at)
        queued = dataclasses.replace(current, background_line_at=turn + spacing)
        return queued, None, Booking(Outcome.DEFERRED, now, turn)
    booked = _take_slot(current, slot=slot, spacing=spacing, straddles=straddles)
    counted = (
        dataclasses.replace(mine, day_count=mine.day_count + 1, weight=share.weight)
        if share and mine
        else None
    )
    return booked, counted, Booking(Outcome.GRANTED, now, slot, first_day, booked.day_count)


def _book_fair(
    current: Ledger,
    mine: AccountLedger,
    quota: KeyQuota,
    share: AccountShare,
    *,
    now: float,
    slot: float,
    spacing: float,
    first_day: int,
    straddles: bool,
    others_weight: float,
    active_siblings: int,
) -> tuple[Ledger | None, AccountLedger | None, Booking]:
    """A background booking for an account's flow: its line decides (see the module's
    docstring)."""
    horizon = quota.horizon
    # The flow's clock: turns (one per call) pass at ``rate`` per second since the anchor;
    # re-anchored now at the rate the key's active weight and the account's active flows give
    # it from now on.
    clock = _clock(mine, now)
    rate = _flow_rate(share, spacing, others_weight, active_siblings)
    reach = clock + horizon * rate  # the turns whose time is within the horizon
    next_turn = max(mine.next_turn, clock)  # an idle account saves up no turns
    idle_key = current.next_slot_at + spacing <= now  # a slot went by unclaimed
    ticket = share.ticket
    if ticket is None:  # a new call takes the account's next turn
        ticket, next_turn = next_turn, next_turn + 1.0
    if ticket > reach + TURN_TOLERANCE and not idle_key:
        # Not its turn yet: come back when the account's clock reaches it.
        turn = max(now + (ticket - clock) / rate, slot) - horizon
        return None, *_fair_wait(mine, turn, ticket, now, clock, rate, next_turn, share)
    if slot > now + horizon + TURN_TOLERANCE:
        # Its turn, but the slot within reach went to another: wait in the key's line.
        turn = max(slot - horizon, current.background_line_at)
        queued = dataclasses.replace(current, background_line_at=turn + spacing)
        return queued, *_fair_wait(mine, turn, ticket, now, clock, rate, next_turn, share)
    booked = _take_slot(current, slot=slot, spacing=spacing, straddles=straddles)
    counted = dataclasses.replace(
        _anchored(mine, now=now, clock=clock, rate=rate, next_turn=next_turn, share=share),
        day_count=mine.day_count + 1,
    )
    return booked, counted, Booking(Outcome.GRANTED, now, slot, first_day, booked.day_count)


def _book_bounded_fair(
    current: Ledger,
    mine: AccountLedger,
    share: AccountShare,
    *,
    now: float,
    slot: float,
    spacing: float,
    first_day: int,
    straddles: bool,
    others_weight: float,
    active_siblings: int,
    max_wait: float,
) -> tuple[Ledger | None, AccountLedger | None, Booking]:
    """A bounded interactive booking for an account's flow: granted while both its slot and
    its turn are within its bound (see the module's docstring)."""
    clock = _clock(mine, now)
    rate = _flow_rate(share, spacing, others_weight, active_siblings)
    reach = clock + max_wait * rate
    next_turn = max(mine.next_turn, clock)
    idle_key = current.next_slot_at + spacing <= now
    turn_due = next_turn <= reach + TURN_TOLERANCE or idle_key
    if not turn_due or slot - now > max_wait:
        # When the call could be served: its slot, or its turn if that comes later. A flow
        # turned away stays active until its caller asks again, so the others make room.
        at = slot if turn_due else max(slot, now + (next_turn - clock) / rate)
        # The clock is re-timed at the rate ``at`` was reckoned with. Written only when that
        # changes or the flow's activity would grow by more than a turn (it is kept a turn past
        # when the caller is back): a burst of refusals writes once, not once per refusal.
        asking_until = now + busy_retry_after(at - now, max_wait) + 1.0 / rate
        waiting = (
            dataclasses.replace(
                mine,
                anchor_at=now,
                anchor_turn=clock,
                rate=rate,
                active_until=max(mine.active_until, asking_until),
                weight=share.weight,
            )
            if asking_until > mine.active_until + 1.0 / rate or rate != mine.rate
            else None
        )
        return None, waiting, Booking(Outcome.BUSY, now, at, first_day, current.day_count)
    booked = _take_slot(current, slot=slot, spacing=spacing, straddles=straddles)
    anchored = _anchored(
        mine, now=now, clock=clock, rate=rate, next_turn=next_turn + 1.0, share=share
    )
    # A caller waiting for its slot keeps its flow active until a turn past it, and callers
    # turned away keep it active until they are back.
    counted = dataclasses.replace(
        anchored,
        active_until=max(anchored.active_until, slot + 1.0 / rate, mine.active_until),
        day_count=mine.day_count + 1,
    )
    return booked, counted, Booking(Outcome.GRANTED, now, slot, first_day, booked.day_count)


def _clock(mine: AccountLedger, now: float) -> float:
    """The flow's clock at ``now``: the turns passed since its anchor."""
    return mine.anchor_turn + max(0.0, now - mine.anchor_at) * mine.rate


def _flow_rate(
    share: AccountShare, spacing: float, others_weight: float, active_siblings: int
) -> float:
    """Turns per second for the flow from now on: its account's weight over the key's active
    weight, split between the account's active flows, one key slot per spacing."""
    return (share.weight / (1 + active_siblings)) / (
        spacing * (share.weight + max(others_weight, 0.0))
    )


def _fair_wait(
    mine: AccountLedger,
    turn: float,
    ticket: float,
    now: float,
    clock: float,
    rate: float,
    next_turn: float,
    share: AccountShare,
) -> tuple[AccountLedger, Booking]:
    placed = _anchored(mine, now=now, clock=clock, rate=rate, next_turn=next_turn, share=share)
    # A caller waiting for its turn keeps its account active (counted in W) until then.
    placed = dataclasses.replace(placed, active_until=max(placed.active_until, turn + 1.0 / rate))
    return placed, Booking(Outcome.DEFERRED, now, turn, ticket=ticket)


def _anchored(
    mine: AccountLedger,
    *,
    now: float,
    clock: float,
    rate: float,
    next_turn: float,
    share: AccountShare,
) -> AccountLedger:
    return dataclasses.replace(
        mine,
        anchor_at=now,
        anchor_turn=clock,
        rate=rate,
        next_turn=next_turn,
        weight=share.weight,
        active_until=now + (next_turn - clock) / rate,
    )


def _take_slot(current: Ledger, *, slot: float, spacing: float, straddles: bool) -> Ledger:
    return dataclasses.replace(
        current,
        next_slot_at=slot + spacing,
        day_count=current.day_count + 1,
        next_day_count=current.next_day_count + int(straddles),
    )


def account_rolled(account: AccountLedger, day: int) -> AccountLedger:
    """The flow's ledger with ``day`` as its current day (its count restarts each day)."""
    if day <= account.day:
        return account
    return dataclasses.replace(account, day=day, day_count=0)


def account_view(flows: Iterable[AccountLedger], day: int) -> AccountLedger:
    """An account's flows on a key as one ledger for reporting, as of ``day``: the calls of all
    its flows that day, active while any flow is, its clock fields those of its busiest flow."""
    rolled_flows = [account_rolled(flow, day) for flow in flows]
    if not rolled_flows:
        return AccountLedger(day=day)
    busiest = max(rolled_flows, key=lambda flow: flow.active_until)
    return dataclasses.replace(
        busiest,
        day=day,
        day_count=sum(flow.day_count for flow in rolled_flows),
        weight=max(flow.weight for flow in rolled_flows),
    )


def book_token_slot(ledger: Ledger, quota: KeyQuota, *, now: float) -> tuple[Ledger, Booking]:
    """Book the next token-endpoint slot, ``token_spacing`` after the previous one."""
    slot = max(now, ledger.token_next_slot_at)
    booked = dataclasses.replace(ledger, token_next_slot_at=slot + quota.token_spacing)
    return booked, Booking(Outcome.GRANTED, now, slot)


def pause(ledger: Ledger, *, seconds: float, now: float) -> Ledger:
    """No slot starts before ``now + seconds`` (an existing longer pause is kept)."""
    return dataclasses.replace(ledger, paused_until=max(ledger.paused_until, now + seconds))


def widen_margin(
    ledger: Ledger, quota: KeyQuota, *, factor: float, step: float, maximum: float, now: float
) -> Ledger | None:
    """Margin becomes ``min(maximum, margin * factor + step)``; never narrows. Widens at most
    once per cooldown, so a burst of 429s seen by many processes counts as one."""
    if now < ledger.margin_widened_at + WIDEN_COOLDOWN_SECONDS:
        return None
    current = effective_margin(ledger, quota)
    widened = max(current, min(maximum, current * factor + step))
    if widened == ledger.margin:
        return None
    return dataclasses.replace(ledger, margin=widened, margin_widened_at=now)


def stop_day(ledger: Ledger, quota: KeyQuota, *, now: float) -> Ledger:
    """Refuse every booking until today reopens (CC answered ``quota_exceeded``)."""
    reopens = reopens_at(day_number(now - quota.day_guard), quota)
    return dataclasses.replace(ledger, stopped_until=max(ledger.stopped_until, reopens))


def resume(ledger: Ledger) -> Ledger:
    """Lift a stop: bookings continue against what is left of today's budget."""
    return dataclasses.replace(ledger, stopped_until=0.0)


def current_view(ledger: Ledger, quota: KeyQuota, *, now: float) -> Ledger:
    """The ledger as of ``now`` (rolled into today), for reporting."""
    return rolled(ledger, day_number(now - quota.day_guard))

"""What the quota service answers: a booked slot, or why there is none.

:class:`Reservation` is a booked send slot. The errors say what the caller may do instead:
:class:`QuotaExhausted` (the lane's day is spent; :class:`AccountCapReached` for one account's
cap), :class:`QuotaDeferred` (a background call's turn is later) and :class:`QuotaBusy` (the
slot is further away than the caller will wait). :mod:`.quota` books and raises them.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field

from integrations.models import Lane
from integrations.services.quota_stores import QuotaError
from integrations.services.quota_stores.rules import busy_retry_after


@dataclass(frozen=True)
class Reservation:
    """A booked send slot. ``send_at`` is epoch seconds on the store's clock; ``wait`` is how
    long after the booking was answered (``issued_at``, this process's monotonic clock) the
    slot starts. ``day``/``day_count``: the UTC day booked against and its count with this call
    (``None``/0 for token-endpoint slots, which spend no budget)."""

    api_key_id: int
    lane: str
    send_at: float
    wait: float
    day: dt.date | None = None
    day_count: int = 0
    issued_at: float = field(default_factory=time.monotonic, compare=False)
    #: Seconds :func:`.quota.quota_acquire` spent before the slot came (deferrals and the wait).
    waited: float = field(default=0.0, compare=False)

    def remaining_wait(self) -> float:
        return max(0.0, self.wait - (time.monotonic() - self.issued_at))


class QuotaExhausted(QuotaError):
    """The key's daily budget for this lane is spent until CC's day resets.

    ``reset_at`` is CC's reset, 00:00 UTC; ``retry_at`` is when bookings reopen (the reset
    plus the day guard) — park work until then, not just until ``reset_at``; ``wait`` is the
    seconds until ``retry_at`` by the store's clock. ``stopped``: CC itself answered
    ``quota_exceeded`` (see :func:`.quota.quota_stop_until_next_day`).
    """

    def __init__(
        self,
        *,
        reset_at: dt.datetime,
        retry_at: dt.datetime | None = None,
        wait: float | None = None,
        client_id: str = "",
        lane: str = Lane.INTERACTIVE,
        day_count: int | None = None,
        budget: int | None = None,
        stopped: bool = False,
    ) -> None:
        self.reset_at = reset_at
        self.retry_at = retry_at or reset_at
        self.wait = wait if wait is not None else max(0.0, self.retry_at.timestamp() - time.time())
        self.client_id = client_id
        self.lane = lane
        self.day_count = day_count
        self.budget = budget
        self.stopped = stopped
        key = f" for key {client_id}" if client_id else ""
        if stopped:
            spent = f"Constant Contact reports today's quota{key} spent"
        else:
            booked = (
                f" ({day_count} of {budget} calls booked)"
                if day_count is not None and budget is not None
                else ""
            )
            kept = (
                "; the rest of the day is kept for interactive calls"
                if lane == Lane.BACKGROUND and booked and day_count <= budget
                else ""
            )
            spent = f"The {lane} daily budget{key} is spent{booked}{kept}"
        super().__init__(f"{spent}. It resets at {reset_at:%Y-%m-%d %H:%M} UTC.")


class AccountCapReached(QuotaExhausted):
    """The account has booked its own daily cap on this key; like a spent key, it reopens when
    CC's day resets (``retry_at``). ``cap`` is the cap in calls."""

    def __init__(
        self,
        *,
        account: str,
        cap: int,
        reset_at: dt.datetime,
        retry_at: dt.datetime | None = None,
        wait: float | None = None,
        client_id: str = "",
        lane: str = Lane.INTERACTIVE,
        day_count: int | None = None,
    ) -> None:
        super().__init__(
            reset_at=reset_at,
            retry_at=retry_at,
            wait=wait,
            client_id=client_id,
            lane=lane,
            day_count=day_count,
            budget=cap,
        )
        self.account = account
        self.cap = cap
        self.args = (
            f"{account} has used its daily cap of {cap:,} calls ({day_count or cap:,} booked "
            f"today). It resets at {reset_at:%Y-%m-%d %H:%M} UTC.",
        )


class QuotaDeferred(QuotaError):
    """A background call may not book yet: ask again ``wait`` seconds from now (``not_before``
    on the store's clock), when its turn in the key's background line comes. No slot and no
    budget were booked; each deferred caller is given a turn of its own, one spacing apart."""

    def __init__(self, *, not_before: float, wait: float, ticket: float | None = None) -> None:
        self.not_before = not_before
        self.wait = wait
        #: The account's turn to come back with (``quota_reserve(ticket=)``), None without one.
        self.ticket = ticket
        super().__init__(f"Background calls yield this key for {wait:.3f} s; ask again then.")


class QuotaBusy(QuotaError):
    """The lane's next send slot on the key is further away than the caller will wait
    (``quota_acquire(max_wait=)``). Nothing was booked; ``retry_after`` is the whole number of
    seconds after which asking again is likely to be served."""

    def __init__(self, *, client_id: str, lane: str, wait: float, max_wait: float) -> None:
        self.wait = wait
        self.max_wait = max_wait
        self.retry_after = busy_retry_after(wait, max_wait)
        super().__init__(
            f"Key {client_id} is busy: the next {lane} slot (or this caller's turn in the key's "
            f"fair share) is {wait:.1f} s away, more than the "
            f"{max_wait:.0f} s a proxied call waits. Ask again in {self.retry_after} s."
        )

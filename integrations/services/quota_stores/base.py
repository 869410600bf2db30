"""The contract every quota store fulfils; ``CC_QUOTA_STORE`` names the one in use."""

from __future__ import annotations

from abc import ABC, abstractmethod

from integrations.errors import PortalError, Unavailable
from integrations.services.quota_stores.rules import (
    AccountLedger,
    AccountShare,
    Booking,
    KeyQuota,
    Ledger,
)


class QuotaError(PortalError):
    """Base class of the quota service's errors."""


class QuotaStoreUnavailable(QuotaError, Unavailable):
    """The shared ledger could not be reached, so no call may be sent (fail closed)."""


class QuotaStore(ABC):
    """Keeps each key's :class:`~.rules.Ledger` where every process and host sees it.

    A store only stores: the decisions are :mod:`.rules`, applied in one atomic step against
    the shared ledger, so two processes can never both take the same slot or the last unit of a
    budget. Every method:

    * takes the key's :class:`~.rules.KeyQuota` (limits and policy, computed by the service on
      each call, so a tier change applies to the next reservation);
    * reads the time from the store's own clock — one clock for every process that shares the
      store — unless ``now`` (epoch seconds) is given, which tests use to stand at any moment;
    * creates the key's ledger on first use, without racing a concurrent first use;
    * raises :class:`QuotaStoreUnavailable` — never a driver exception — when the store cannot
      be reached or the step fails; nothing has been booked then.

    ``reserve(quota, background=, now=, share=, max_wait=)``
        Applies :func:`.rules.book_call` and returns its :class:`~.rules.Booking`. ``share``
        names the account booked for (its weight, cap, ticket and flow); the store reads the
        :class:`~.rules.AccountLedger` of that flow and of the account's other flows, and the
        summed weight of the key's other active accounts, in the same step. A GRANTED answer
        writes the slot, one unit of the day's budget and one of the flow's count together, or
        nothing; a DEFERRED one only moves the lines.

    ``reserve_token_slot(quota, now=)``
        Applies :func:`.rules.book_token_slot`: always GRANTED, never touches the day's budget.

    ``pause(quota, seconds=, now=)``
        Applies :func:`.rules.pause`; returns the epoch second the pause ends. Every booking
        made afterwards, by any process, starts at or after it.

    ``widen_margin(quota, factor=, step=, maximum=, now=)``
        Applies :func:`.rules.widen_margin`; returns the key's margin afterwards.

    ``stop_day(quota, now=)``
        Applies :func:`.rules.stop_day`; returns the epoch second bookings reopen.

    ``resume(quota, now=)``
        Applies :func:`.rules.resume`.

    ``read(quota, now=)``
        Returns ``(ledger, now)``: the ledger rolled into the current day, without writing.

    ``read_accounts(quota, now=)``
        Returns ``({account_id: AccountLedger}, now)``: every account's part (its flows as one,
        :func:`.rules.account_view`), rolled into the current day, without writing.
    """

    @abstractmethod
    def reserve(
        self,
        quota: KeyQuota,
        *,
        background: bool,
        now: float | None = None,
        share: AccountShare | None = None,
        max_wait: float | None = None,
    ) -> Booking:
        """Book a call slot and a unit of the day's budget in one atomic step."""

    @abstractmethod
    def reserve_token_slot(self, quota: KeyQuota, *, now: float | None = None) -> Booking:
        """Book a token-endpoint slot."""

    @abstractmethod
    def pause(self, quota: KeyQuota, *, seconds: float, now: float | None = None) -> float:
        """Hold every later booking until ``now + seconds``; returns the end of the pause."""

    @abstractmethod
    def widen_margin(
        self,
        quota: KeyQuota,
        *,
        factor: float,
        step: float,
        maximum: float,
        now: float | None = None,
    ) -> float:
        """Widen the key's slot-spacing margin; returns the margin now in force."""

    @abstractmethod
    def stop_day(self, quota: KeyQuota, *, now: float | None = None) -> float:
        """Mark today's budget spent; returns when bookings reopen."""

    @abstractmethod
    def resume(self, quota: KeyQuota, *, now: float | None = None) -> None:
        """Lift a stop; today's remaining budget can be booked again."""

    @abstractmethod
    def read(self, quota: KeyQuota, *, now: float | None = None) -> tuple[Ledger, float]:
        """The key's ledger as of now, and the store clock's now."""

    @abstractmethod
    def read_accounts(
        self, quota: KeyQuota, *, now: float | None = None
    ) -> tuple[dict[int, AccountLedger], float]:
        """Each account's part of the key's ledger as of now, and the store clock's now."""

    def problem(self) -> str | None:
        """Why the store cannot take bookings now, or None when it answers. The database store
        answers whenever the portal does."""
        return None

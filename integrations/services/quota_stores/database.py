"""The ledger as a ``KeyLimiterState`` row in the Django database (SQLite or PostgreSQL)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, Error, connections, transaction
from django.utils import timezone

from integrations.models import AccountLimiterState, KeyLimiterState
from integrations.services.quota_stores import rules
from integrations.services.quota_stores.base import QuotaStore, QuotaStoreUnavailable
from integrations.services.quota_stores.rules import (
    AccountLedger,
    AccountShare,
    Booking,
    KeyQuota,
    Ledger,
    Outcome,
)

try:
    import fcntl
except ImportError:  # not on Windows: SQLite's own busy handler still serialises bookings
    fcntl = None  # type: ignore[assignment]

Result = TypeVar("Result")

# SQL is built from the model's own names, never from input (hence the S608 waivers).
_TABLE = KeyLimiterState._meta.db_table
_COLUMNS = (
    "next_slot_at",
    "day",
    "day_count",
    "next_day_count",
    "paused_until",
    "margin",
    "margin_widened_at",
    "stopped_until",
    "token_next_slot_at",
    "background_line_at",
)
_SELECT = f"SELECT {', '.join(_COLUMNS)}{{clock}} FROM {_TABLE} WHERE api_key_id = %s{{lock}}"  # noqa: S608
_INSERT = (
    f"INSERT INTO {_TABLE} (api_key_id, {', '.join(_COLUMNS)}, updated_at) "  # noqa: S608
    f"VALUES (%s, {', '.join('NULL' if c == 'day' else '0' for c in _COLUMNS)}, %s) "
    f"ON CONFLICT (api_key_id) DO NOTHING"
)
_UPDATE = (
    f"UPDATE {_TABLE} SET {', '.join(f'{c} = %s' for c in _COLUMNS)}, updated_at = %s "  # noqa: S608
    f"WHERE api_key_id = %s"
)
# PostgreSQL's clock is the one clock every host shares. Read in the same statement as the row;
# were it read before a wait for the row lock, callers would only sleep longer than needed
# (waits are measured from it), never send early.
_PG_CLOCK = ", extract(epoch FROM clock_timestamp())::float8"

# The account's side of a booking: the lines and day counts of its flows (one per portal token,
# 0 for the portal's own calls), next to the key's row.
_ACCOUNT_TABLE = AccountLimiterState._meta.db_table
_ACCOUNT_COLUMNS = tuple(field.name for field in dataclasses.fields(AccountLedger))
_FLOWS_SELECT = (
    f"SELECT token, {', '.join(_ACCOUNT_COLUMNS)} FROM {_ACCOUNT_TABLE} "  # noqa: S608
    "WHERE api_key_id = %s AND account_id = %s"
)
_ACCOUNTS_SELECT = (
    f"SELECT account_id, {', '.join(_ACCOUNT_COLUMNS)} FROM {_ACCOUNT_TABLE} "  # noqa: S608
    "WHERE api_key_id = %s ORDER BY account_id"
)
# Each other active account once, at its weight, however many of its flows are active.
_ACCOUNT_OTHERS_WEIGHT = (
    "SELECT COALESCE(SUM(w), 0) FROM ("  # noqa: S608
    f"SELECT MAX(weight) AS w FROM {_ACCOUNT_TABLE} "
    "WHERE api_key_id = %s AND active_until > %s AND account_id <> %s GROUP BY account_id) o"
)
_ACCOUNT_UPSERT = (
    f"INSERT INTO {_ACCOUNT_TABLE} (api_key_id, account_id, token, "  # noqa: S608
    f"{', '.join(_ACCOUNT_COLUMNS)}, updated_at) VALUES (%s, %s, %s, "
    f"{', '.join('%s' for _ in _ACCOUNT_COLUMNS)}, %s) "
    f"ON CONFLICT (api_key_id, account_id, token) DO UPDATE SET "
    f"{', '.join(f'{c} = excluded.{c}' for c in _ACCOUNT_COLUMNS)}, updated_at = excluded.updated_at"
)

# On PostgreSQL a reservation is one call of ccportal_quota_book (migration 0016:
# rules.book_call in PL/pgSQL), so the key's row lock is held only while the server runs it
# (a lock held across client round trips queues every process behind the slowest). Keep it in
# step with rules.book_call and the Lua in redis.py; the store suite holds all three to the
# same answers. A booking that commits on its own need not hold the row lock while the WAL
# reaches the disk: with synchronous_commit off (``async``), a crash of the database server can
# forget at most the last 3 * wal_writer_delay (0.6 s by default) of bookings, whose slots are
# long past by the time it is back, i.e. a few units of the day's count. That halves the time
# each booking holds the key's row and doubles a key's bookings per second under contention.
# Inside the caller's transaction the setting would also cover the caller's own writes, so it
# is asked for only when the booking is its own transaction.
_PG_RESERVE = (
    "SELECT outcome, now, at, day, day_count, ticket FROM ccportal_quota_book("
    "%(id)s, %(account)s, %(token)s, %(weight)s, %(cap)s, %(ticket)s, %(now)s, %(margin)s, "
    "%(per_second)s, %(guard)s, %(budget)s, %(background)s, %(horizon)s, %(fair)s, %(async)s, "
    "%(max_wait)s)"
)


class DatabaseStore(QuotaStore):
    """Each step is atomic on the key's row; the row is created by ``INSERT ... ON CONFLICT DO
    NOTHING``, so racing first uses all end up on the one row.

    * PostgreSQL: a reservation is one function call that locks the row (``FOR UPDATE``),
      applies the rules and writes, committed without waiting for the disk (see
      ``_PG_RESERVE``);
      other steps are a short, fully durable transaction around ``SELECT ... FOR UPDATE``.
      Only steps on the same key wait for each other. The time is the database clock
      (``clock_timestamp()``), so hosts whose clocks disagree still share one timeline.
    * SQLite: a short transaction that starts with a write (``INSERT ... ON CONFLICT DO
      NOTHING``) and so holds the database's write lock whatever ``transaction_mode`` says. The
      host clock is the one clock, as SQLite serves one host. The processes of the host take
      turns on a kernel file lock first: a waiter is woken the moment it is its turn, instead of
      sleeping in SQLite's busy handler (1, 2, 5 ... 100 ms) and losing to newcomers.

    Call the quota service outside ``transaction.atomic()``: inside one, the booking (and its
    row lock) would last, or be rolled back, with the caller's transaction.
    """

    def __init__(self, *, using: str = DEFAULT_DB_ALIAS) -> None:
        self.using = using
        self._host_lock = _HostLock()

    def reserve(
        self,
        quota: KeyQuota,
        *,
        background: bool,
        now: float | None = None,
        share: AccountShare | None = None,
        max_wait: float | None = None,
    ) -> Booking:
        if connections[self.using].vendor == "postgresql":
            return self._reserve_in_one_statement(
                quota, background=background, now=now, share=share, max_wait=max_wait
            )
        with self._locked(quota, now) as (cursor, ledger, at):
            account, others = None, 0.0
            siblings: list[AccountLedger] = []
            if share is not None:
                account, siblings = self._select_flows(cursor, quota.ledger_id, share)
                others = (
                    self._others_weight(cursor, quota, share, at)
                    if rules.in_fair_share(quota, background, max_wait)
                    else 0.0
                )
            changed, account_changed, booking = rules.book_call(
                ledger,
                quota,
                background=background,
                now=at,
                share=share,
                account=account,
                others_weight=others,
                siblings=siblings,
                max_wait=max_wait,
            )
            if changed is not None:
                self._write(cursor, quota.ledger_id, changed)
            if share is not None and account_changed is not None:
                self._write_account(cursor, quota.ledger_id, share, account_changed)
            return booking

    def reserve_token_slot(self, quota: KeyQuota, *, now: float | None = None) -> Booking:
        return self._step(
            quota, now, lambda ledger, at: rules.book_token_slot(ledger, quota, now=at)
        )

    def pause(self, quota: KeyQuota, *, seconds: float, now: float | None = None) -> float:
        def decide(ledger: Ledger, at: float) -> tuple[Ledger, float]:
            paused = rules.pause(ledger, seconds=seconds, now=at)
            return paused, paused.paused_until

        return self._step(quota, now, decide)

    def widen_margin(
        self,
        quota: KeyQuota,
        *,
        factor: float,
        step: float,
        maximum: float,
        now: float | None = None,
    ) -> float:
        def decide(ledger: Ledger, at: float) -> tuple[Ledger | None, float]:
            widened = rules.widen_margin(
                ledger, quota, factor=factor, step=step, maximum=maximum, now=at
            )
            return widened, rules.effective_margin(widened or ledger, quota)

        return self._step(quota, now, decide)

    def stop_day(self, quota: KeyQuota, *, now: float | None = None) -> float:
        def decide(ledger: Ledger, at: float) -> tuple[Ledger, float]:
            stopped = rules.stop_day(ledger, quota, now=at)
            return stopped, stopped.stopped_until

        return self._step(quota, now, decide)

    def resume(self, quota: KeyQuota, *, now: float | None = None) -> None:
        self._step(quota, now, lambda ledger, at: (rules.resume(ledger), None))

    def read(self, quota: KeyQuota, *, now: float | None = None) -> tuple[Ledger, float]:
        try:
            with connections[self.using].cursor() as cursor:
                ledger, clock = self._select(cursor, quota.ledger_id, lock=False)
        except Error as exc:
            raise _unavailable(exc, self.using) from exc
        at = clock if now is None else now
        return rules.current_view(ledger, quota, now=at), at

    def read_accounts(
        self, quota: KeyQuota, *, now: float | None = None
    ) -> tuple[dict[int, AccountLedger], float]:
        ledger, at = self.read(quota, now=now)
        try:
            with connections[self.using].cursor() as cursor:
                cursor.execute(_ACCOUNTS_SELECT, [quota.ledger_id])
                rows = cursor.fetchall()
        except Error as exc:
            raise _unavailable(exc, self.using) from exc
        day = max(ledger.day, rules.day_number(at - quota.day_guard))
        flows: dict[int, list[AccountLedger]] = {}
        for row in rows:
            flows.setdefault(row[0], []).append(_account_ledger(row[1:]))
        return {account: rules.account_view(its, day) for account, its in flows.items()}, at

    # --- PostgreSQL: a reservation in one statement -------------------------------------------

    def _reserve_in_one_statement(
        self,
        quota: KeyQuota,
        *,
        background: bool,
        now: float | None,
        share: AccountShare | None,
        max_wait: float | None,
    ) -> Booking:
        connection = connections[self.using]
        params = {
            "id": quota.ledger_id,
            "account": share.account_id if share else None,
            "token": share.token_id if share else 0,
            "weight": float(share.weight) if share else 1.0,
            "cap": share.cap if share else None,
            "ticket": share.ticket if share else None,
            "now": now,
            "margin": quota.margin,
            "per_second": quota.per_second,
            "guard": quota.day_guard,
            "budget": quota.budget(background=background),
            "background": background,
            "horizon": quota.horizon,
            "fair": quota.fair_share,
            "async": not connection.in_atomic_block,
            "max_wait": max_wait,
        }
        try:
            with connection.cursor() as cursor:
                cursor.execute(_PG_RESERVE, params)
                outcome, clock, at, day, day_count, ticket = cursor.fetchone()
        except Error as exc:
            raise _unavailable(exc, self.using) from exc
        return Booking(Outcome(outcome), clock, at, day, day_count, ticket)

    # --- one locked step ----------------------------------------------------------------------

    def _step(
        self,
        quota: KeyQuota,
        now: float | None,
        decide: Callable[[Ledger, float], tuple[Ledger | None, Result]],
    ) -> Result:
        with self._locked(quota, now) as (cursor, ledger, at):
            return self._apply(cursor, quota, ledger, at, decide)

    @contextmanager
    def _locked(self, quota: KeyQuota, now: float | None) -> Iterator[tuple[Any, Ledger, float]]:
        """The key's row, locked for one short transaction: ``(cursor, ledger, now)``."""
        connection = connections[self.using]
        try:
            if connection.vendor == "sqlite":
                # Inside the caller's transaction this process may already hold SQLite's lock:
                # waiting for the host lock then could stall whoever holds it.
                host_lock = (
                    nullcontext()
                    if connection.in_atomic_block
                    else self._host_lock.held(connection.settings_dict["NAME"])
                )
                with host_lock, transaction.atomic(using=self.using), connection.cursor() as c:
                    self._insert(c, quota.ledger_id)
                    ledger, clock = self._select(c, quota.ledger_id, lock=True)
                    yield c, ledger, clock if now is None else now
                return
            with transaction.atomic(using=self.using), connection.cursor() as cursor:
                try:
                    ledger, clock = self._select(cursor, quota.ledger_id, lock=True)
                except LookupError:
                    self._insert(cursor, quota.ledger_id)
                    ledger, clock = self._select(cursor, quota.ledger_id, lock=True)
                yield cursor, ledger, clock if now is None else now
        except Error as exc:
            raise _unavailable(exc, self.using) from exc

    def _apply(
        self,
        cursor: Any,
        quota: KeyQuota,
        ledger: Ledger,
        now: float,
        decide: Callable[[Ledger, float], tuple[Ledger | None, Result]],
    ) -> Result:
        changed, result = decide(ledger, now)
        if changed is not None:
            self._write(cursor, quota.ledger_id, changed)
        return result

    def _select(self, cursor: Any, ledger_id: int, *, lock: bool) -> tuple[Ledger, float]:
        postgres = cursor.db.vendor == "postgresql"
        cursor.execute(
            _SELECT.format(
                clock=_PG_CLOCK if postgres else "",
                lock=" FOR UPDATE" if lock and postgres else "",
            ),
            [ledger_id],
        )
        row = cursor.fetchone()
        clock = row[-1] if row is not None and postgres else time.time()
        if row is None:
            if lock:
                raise LookupError(ledger_id)
            return Ledger(), clock
        values = dict(zip(_COLUMNS, row, strict=False))
        day = values.pop("day")
        if isinstance(day, str):  # SQLite hands dates back as ISO text
            day = dt.date.fromisoformat(day)
        return Ledger(day=rules.date_day_number(day) if day else 0, **values), float(clock)

    def _insert(self, cursor: Any, ledger_id: int) -> None:
        cursor.execute(_INSERT, [ledger_id, self._timestamp(cursor)])

    def _write(self, cursor: Any, ledger_id: int, ledger: Ledger) -> None:
        day = rules.day_date(ledger.day) if ledger.day else None
        values = {**dataclasses.asdict(ledger), "day": cursor.db.ops.adapt_datefield_value(day)}
        cursor.execute(
            _UPDATE, [*(values[c] for c in _COLUMNS), self._timestamp(cursor), ledger_id]
        )

    def _select_flows(
        self, cursor: Any, ledger_id: int, share: AccountShare
    ) -> tuple[AccountLedger, list[AccountLedger]]:
        """The ledger of the share's flow and those of the account's other flows."""
        cursor.execute(_FLOWS_SELECT, [ledger_id, share.account_id])
        mine, siblings = AccountLedger(), []
        for token, *values in cursor.fetchall():
            if token == share.token_id:
                mine = _account_ledger(values)
            else:
                siblings.append(_account_ledger(values))
        return mine, siblings

    def _others_weight(
        self, cursor: Any, quota: KeyQuota, share: AccountShare, now: float
    ) -> float:
        """The summed weight of the other accounts active on the key at ``now``."""
        cursor.execute(_ACCOUNT_OTHERS_WEIGHT, [quota.ledger_id, now, share.account_id])
        return float(cursor.fetchone()[0])

    def _write_account(
        self, cursor: Any, ledger_id: int, share: AccountShare, account: AccountLedger
    ) -> None:
        day = rules.day_date(account.day) if account.day else None
        values = {**dataclasses.asdict(account), "day": cursor.db.ops.adapt_datefield_value(day)}
        cursor.execute(
            _ACCOUNT_UPSERT,
            [
                ledger_id,
                share.account_id,
                share.token_id,
                *(values[c] for c in _ACCOUNT_COLUMNS),
                self._timestamp(cursor),
            ],
        )

    @staticmethod
    def _timestamp(cursor: Any) -> Any:
        return cursor.db.ops.adapt_datetimefield_value(timezone.now())


class _HostLock:
    """An exclusive ``flock`` on ``<sqlite file>.quota-lock``, one holder per host at a time.

    Threads of a process share the file description, so they queue on a thread lock first.
    """

    def __init__(self) -> None:
        self._thread_lock = threading.Lock()
        self._files: dict[tuple[int, str], int] = {}

    @contextmanager
    def held(self, database: Any) -> Iterator[None]:
        name = str(database)
        if fcntl is None or not name or name == ":memory:" or "mode=memory" in name:
            yield
            return
        with self._thread_lock:
            descriptor = self._descriptor(f"{name}.quota-lock")
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(descriptor, fcntl.LOCK_UN)

    def _descriptor(self, path: str) -> int:
        # Keyed by pid: a forked child must not share its parent's lock file description.
        key = (os.getpid(), path)
        if key not in self._files:
            self._files[key] = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._files[key]


def _account_ledger(row: Sequence[Any]) -> AccountLedger:
    values = dict(zip(_ACCOUNT_COLUMNS, row, strict=True))
    day = values.pop("day")
    if isinstance(day, str):  # SQLite hands dates back as ISO text
        day = dt.date.fromisoformat(day)
    return AccountLedger(day=rules.date_day_number(day) if day else 0, **values)


def _unavailable(exc: Error, using: str) -> QuotaStoreUnavailable:
    summary = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return QuotaStoreUnavailable(
        f"The quota ledger in database {using!r} is unavailable ({type(exc).__name__}: "
        f"{summary}); no call was booked, so none may be sent."
    )

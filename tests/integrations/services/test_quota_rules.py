"""Corners of the booking rules that no store can be stood in by the clock alone."""

from __future__ import annotations

import pytest

from integrations.services.quota_stores.rules import (
    SECONDS_PER_DAY,
    KeyQuota,
    Ledger,
    Outcome,
    book_call,
    day_number,
    rolled,
    stop_day,
)

QUOTA = KeyQuota(
    ledger_id=1,
    client_id="key",
    per_second=4,
    per_day=10,
    background_per_day=9,
    margin=0.05,
    horizon=0.3,
    day_guard=5.0,
    token_spacing=1.05,
)
MIDNIGHT = 1_900_000_000 // SECONDS_PER_DAY * SECONDS_PER_DAY
TODAY = day_number(MIDNIGHT)


def test_a_clock_that_steps_back_does_not_reopen_a_counted_day():
    ledger = Ledger(day=TODAY, day_count=10)
    _, _, booking = book_call(ledger, QUOTA, background=False, now=MIDNIGHT - 3600)
    assert (booking.outcome, booking.day) == (Outcome.EXHAUSTED, TODAY)


def test_a_ledger_idle_for_days_starts_the_day_from_zero():
    ledger = Ledger(day=TODAY - 3, day_count=7, next_day_count=4)
    assert rolled(ledger, TODAY) == Ledger(day=TODAY)
    assert rolled(ledger, TODAY - 2) == Ledger(day=TODAY - 2, day_count=4)


def test_a_refusal_changes_nothing():
    ledger = Ledger(day=TODAY, day_count=9, next_slot_at=MIDNIGHT + 100)
    changed, _, booking = book_call(ledger, QUOTA, background=True, now=MIDNIGHT + 100)
    assert (changed, booking.outcome) == (None, Outcome.EXHAUSTED)


def test_a_deferral_moves_only_the_background_line():
    ledger = Ledger(day=TODAY, day_count=3, next_slot_at=MIDNIGHT + 101)
    changed, _, booking = book_call(ledger, QUOTA, background=True, now=MIDNIGHT + 100)
    assert (booking.outcome, booking.at) == (Outcome.DEFERRED, MIDNIGHT + 100.7)
    assert changed == Ledger(
        day=TODAY, day_count=3, next_slot_at=MIDNIGHT + 101, background_line_at=MIDNIGHT + 100.9625
    )


def test_stop_keeps_the_longer_of_two_stops():
    ledger = Ledger(stopped_until=MIDNIGHT + 2 * SECONDS_PER_DAY)
    assert stop_day(ledger, QUOTA, now=MIDNIGHT + 100).stopped_until == ledger.stopped_until


@pytest.mark.parametrize(
    ("offset", "first", "last"),
    [(-6, TODAY - 1, TODAY - 1), (-4, TODAY - 1, TODAY), (4, TODAY - 1, TODAY), (6, TODAY, TODAY)],
)
def test_the_guard_band_straddles_midnight_by_five_seconds_each_side(offset, first, last):
    changed, _, booking = book_call(Ledger(), QUOTA, background=False, now=MIDNIGHT + offset)
    assert booking.day == first
    assert changed.next_day_count == int(last > first)

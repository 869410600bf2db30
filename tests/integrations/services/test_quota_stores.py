"""The store contract, held against every store with the same steps and the same clock.

Times are injected (``now=``) so day boundaries can be stood on; the store itself is real.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.db import transaction

from integrations.services.quota import key_quota
from integrations.services.quota_stores import Outcome
from integrations.services.quota_stores.rules import SECONDS_PER_DAY, day_number
from tests.integrations.services.quota_support.stores import (
    STORES,
    StoreUnderTest,
    custom_key,
    store_under_test,
)

pytestmark = pytest.mark.django_db(transaction=True)


MIDNIGHT = dt.datetime(2031, 3, 4, tzinfo=dt.UTC).timestamp()
DAY_BEFORE = day_number(MIDNIGHT) - 1
GUARD = 5.0


def moment(expected):
    """Epoch seconds compared to 10 µs: pytest.approx's default relative tolerance would
    allow half an hour at today's epoch."""
    return pytest.approx(expected, rel=0, abs=1e-5)


@pytest.fixture(params=STORES)
def store(request, settings) -> StoreUnderTest:
    return store_under_test(request, settings)


@pytest.fixture(autouse=True)
def policy(settings):
    """Pin the policy these tests do arithmetic with."""
    settings.CC_QUOTA_MARGIN = 0.05
    settings.CC_QUOTA_BACKGROUND_HORIZON = 0.3
    settings.CC_QUOTA_DAY_GUARD = GUARD
    settings.CC_QUOTA_INTERACTIVE_RESERVE = 0.05


def test_slots_are_one_spacing_apart_starting_now(store):
    quota = key_quota(custom_key(per_second=4, per_day=1000))
    now = MIDNIGHT - 3600
    bookings = [store.store.reserve(quota, background=False, now=now) for _ in range(5)]
    spacing = 1.05 / 4
    assert {b.outcome for b in bookings} == {Outcome.GRANTED}
    assert [b.at for b in bookings] == moment([now + i * spacing for i in range(5)])
    assert [b.day_count for b in bookings] == [1, 2, 3, 4, 5]
    assert bookings[-1].wait == pytest.approx(4 * spacing)


def test_an_interactive_slot_beyond_the_callers_bound_is_busy_and_books_nothing(store):
    quota = key_quota(custom_key(per_second=4, per_day=1000))
    now = MIDNIGHT - 3600
    spacing = 1.05 / 4
    bound = 3 * spacing + 0.01  # the fourth slot is within it, the fifth is not
    within = [
        store.store.reserve(quota, background=False, now=now, max_wait=bound) for _ in range(4)
    ]
    assert {b.outcome for b in within} == {Outcome.GRANTED}
    refused = [
        store.store.reserve(quota, background=False, now=now, max_wait=bound) for _ in range(3)
    ]
    assert {b.outcome for b in refused} == {Outcome.BUSY}
    assert refused[0].at == moment(now + 4 * spacing)  # the slot it would have had
    assert refused[0].day_count == 4
    # Nothing was booked: the next caller without a bound gets that very slot.
    unbounded = store.store.reserve(quota, background=False, now=now)
    assert (unbounded.outcome, unbounded.at) == (Outcome.GRANTED, moment(now + 4 * spacing))
    ledger, _ = store.store.read(quota, now=now)
    assert ledger.day_count == 5
    # A spent day still says so, whatever the bound.
    store.store.stop_day(quota, now=now)
    stopped = store.store.reserve(quota, background=False, now=now, max_wait=0.0)
    assert stopped.outcome is Outcome.STOPPED


def test_store_clock_decides_when_no_time_is_given(store):
    quota = key_quota(custom_key(per_second=4, per_day=1000))
    booking = store.store.reserve(quota, background=False)
    assert booking.now == pytest.approx(time.time(), rel=0, abs=1.0)
    assert booking.at == booking.now


def test_background_beyond_the_horizon_is_deferred_and_books_nothing(store):
    quota = key_quota(custom_key(per_second=4, per_day=1000))
    now = MIDNIGHT - 3600
    first = store.store.reserve(quota, background=True, now=now)
    second = store.store.reserve(quota, background=True, now=now)
    third = store.store.reserve(quota, background=True, now=now)
    assert (first.outcome, second.outcome) == (Outcome.GRANTED, Outcome.GRANTED)
    assert third.outcome is Outcome.DEFERRED
    # Slot 3 starts at now + 0.525; background may book it once it is within 0.3 s.
    assert third.at == moment(now + 0.525 - 0.3)
    interactive = store.store.reserve(quota, background=False, now=now)
    assert interactive.at == moment(now + 0.525)
    assert interactive.day_count == 3
    later = store.store.reserve(quota, background=True, now=now + 0.525 + 0.2625 - 0.3)
    assert later.outcome is Outcome.GRANTED
    assert later.at == moment(now + 0.525 + 0.2625)


def test_deferred_background_callers_get_turns_one_spacing_apart(store):
    quota = key_quota(custom_key(per_second=4, per_day=1000))
    now = MIDNIGHT - 3600
    spacing = 0.2625
    store.store.reserve(quota, background=False, now=now + 1.0)  # next slot at now + 1.2625
    waiting = [store.store.reserve(quota, background=True, now=now) for _ in range(3)]
    assert {w.outcome for w in waiting} == {Outcome.DEFERRED}
    turns = [now + 1.2625 - 0.3 + i * spacing for i in range(3)]
    assert [w.at for w in waiting] == moment(turns)
    ledger, _ = store.store.read(quota, now=now)
    assert (ledger.day_count, ledger.next_slot_at) == (1, moment(now + 1.2625))

    # Each comes back at its turn and finds its slot within the horizon.
    for i, turn in enumerate(turns):
        booking = store.store.reserve(quota, background=True, now=turn)
        assert (booking.outcome, booking.at) == (
            Outcome.GRANTED,
            moment(now + 1.2625 + i * spacing),
        )
    # A line that has drained starts again from the next slot.
    late = [store.store.reserve(quota, background=True, now=now + 10) for _ in range(3)]
    assert [b.outcome for b in late] == [Outcome.GRANTED, Outcome.GRANTED, Outcome.DEFERRED]
    assert late[-1].at == moment(now + 10 + 2 * spacing - 0.3)


def test_calls_near_midnight_count_against_both_days(store):
    quota = key_quota(custom_key(per_second=1000, per_day=10))
    for count in (1, 2, 3):
        booking = store.store.reserve(quota, background=False, now=MIDNIGHT - 100)
        assert (booking.day, booking.day_count) == (DAY_BEFORE, count)
    before = store.store.reserve(quota, background=False, now=MIDNIGHT - 2)
    after = store.store.reserve(quota, background=False, now=MIDNIGHT + 2)
    assert (before.day, before.day_count) == (DAY_BEFORE, 4)
    assert (after.day, after.day_count) == (DAY_BEFORE, 5)
    next_day = store.store.reserve(quota, background=False, now=MIDNIGHT + GUARD + 1)
    # The two guard-band calls were already counted against the new day.
    assert (next_day.day, next_day.day_count) == (DAY_BEFORE + 1, 3)
    ledger, _ = store.store.read(quota, now=MIDNIGHT + GUARD + 2)
    assert (ledger.day, ledger.day_count, ledger.next_day_count) == (DAY_BEFORE + 1, 3, 0)


def test_a_spent_day_reopens_at_midnight_plus_the_guard(store):
    quota = key_quota(custom_key(per_second=1000, per_day=3))
    for _ in range(3):
        store.store.reserve(quota, background=False, now=MIDNIGHT - 100)
    refused = store.store.reserve(quota, background=False, now=MIDNIGHT - 100)
    assert refused.outcome is Outcome.EXHAUSTED
    assert (refused.at, refused.day, refused.day_count) == (MIDNIGHT + GUARD, DAY_BEFORE, 3)
    assert refused.wait == pytest.approx(100 + GUARD)
    just_after = store.store.reserve(quota, background=False, now=MIDNIGHT + GUARD - 0.1)
    assert just_after.outcome is Outcome.EXHAUSTED
    reopened = store.store.reserve(quota, background=False, now=MIDNIGHT + GUARD + 0.01)
    assert (reopened.outcome, reopened.day, reopened.day_count) == (
        Outcome.GRANTED,
        DAY_BEFORE + 1,
        1,
    )


def test_guard_band_calls_can_fill_the_next_day(store):
    quota = key_quota(custom_key(per_second=1000, per_day=3))
    for _ in range(3):
        assert store.store.reserve(quota, background=False, now=MIDNIGHT - 1).day == DAY_BEFORE
    refused = store.store.reserve(quota, background=False, now=MIDNIGHT + GUARD + 1)
    assert refused.outcome is Outcome.EXHAUSTED
    assert refused.day == DAY_BEFORE + 1
    assert refused.at == MIDNIGHT + SECONDS_PER_DAY + GUARD


def test_background_stops_at_the_interactive_reserve(store):
    quota = key_quota(custom_key(per_second=1000, per_day=40))
    assert quota.background_per_day == 38
    now = MIDNIGHT - 3600
    granted = [store.store.reserve(quota, background=True, now=now) for _ in range(38)]
    assert {b.outcome for b in granted} == {Outcome.GRANTED}
    assert store.store.reserve(quota, background=True, now=now).outcome is Outcome.EXHAUSTED
    assert store.store.reserve(quota, background=False, now=now).day_count == 39
    assert store.store.reserve(quota, background=False, now=now).day_count == 40
    assert store.store.reserve(quota, background=False, now=now).outcome is Outcome.EXHAUSTED


def test_stopped_day_refuses_every_lane_until_the_reset_or_a_resume(store):
    quota = key_quota(custom_key(per_second=4, per_day=100))
    now = MIDNIGHT - 3600
    store.store.reserve(quota, background=False, now=now)
    assert store.store.stop_day(quota, now=now + 1) == MIDNIGHT + GUARD
    for background in (False, True):
        refused = store.store.reserve(quota, background=background, now=now + 2)
        assert (refused.outcome, refused.at) == (Outcome.STOPPED, MIDNIGHT + GUARD)
        assert (refused.day, refused.day_count) == (DAY_BEFORE, 1)
    ledger, _ = store.store.read(quota, now=now + 3)
    assert (ledger.day_count, ledger.stopped_until) == (1, MIDNIGHT + GUARD)
    reopened = store.store.reserve(quota, background=True, now=MIDNIGHT + GUARD + 1)
    assert (reopened.outcome, reopened.day, reopened.day_count) == (
        Outcome.GRANTED,
        DAY_BEFORE + 1,
        1,
    )

    store.store.stop_day(quota, now=MIDNIGHT + 60)
    assert store.store.reserve(quota, background=False, now=MIDNIGHT + 61).outcome is (
        Outcome.STOPPED
    )
    store.store.resume(quota, now=MIDNIGHT + 62)
    resumed = store.store.reserve(quota, background=False, now=MIDNIGHT + 63)
    assert (resumed.outcome, resumed.day_count) == (Outcome.GRANTED, 2)


def test_pause_holds_every_later_booking_and_is_never_shortened(store):
    quota = key_quota(custom_key(per_second=4, per_day=100))
    now = MIDNIGHT - 3600
    assert store.store.pause(quota, seconds=1.0, now=now) == now + 1.0
    assert store.store.pause(quota, seconds=0.2, now=now) == now + 1.0
    assert store.store.reserve(quota, background=False, now=now).at == now + 1.0
    background = store.store.reserve(quota, background=True, now=now)
    assert (background.outcome, background.at) == (Outcome.DEFERRED, now + 1.2625 - 0.3)


def test_margin_widens_once_per_burst_never_narrows_and_stays_capped(store):
    quota = key_quota(custom_key(per_second=4, per_day=100))
    now = MIDNIGHT - 3600

    def widen(at: float, maximum: float = 0.5, step: float = 0.05) -> float:
        return store.store.widen_margin(quota, factor=1.0, step=step, maximum=maximum, now=at)

    assert widen(now) == pytest.approx(0.10)
    assert widen(now + 0.5) == pytest.approx(0.10)  # same burst of 429s
    assert widen(now + 1.0) == pytest.approx(0.15)
    assert widen(now + 2.0, maximum=0.12) == pytest.approx(0.15)
    assert widen(now + 3.0, step=1.0) == pytest.approx(0.5)
    ledger, _ = store.store.read(quota, now=now + 4)
    assert ledger.margin == pytest.approx(0.5)
    first = store.store.reserve(quota, background=False, now=now + 4)
    second = store.store.reserve(quota, background=False, now=now + 4)
    assert second.at - first.at == pytest.approx(1.5 / 4)


def test_token_slots_are_spaced_a_second_apart_and_spend_no_budget(store):
    quota = key_quota(custom_key(per_second=4, per_day=1))
    now = MIDNIGHT - 3600
    store.store.pause(quota, seconds=30, now=now)
    slots = [store.store.reserve_token_slot(quota, now=now).at for _ in range(3)]
    # A second apart plus the token margin (a quarter second), whatever the API pause.
    assert slots == moment([now, now + 1.25, now + 2.5])
    ledger, _ = store.store.read(quota, now=now)
    assert ledger.day_count == 0


def test_a_new_key_reads_as_an_empty_ledger(store):
    quota = key_quota(custom_key(per_second=4, per_day=100))
    ledger, now = store.store.read(quota, now=MIDNIGHT + 60)
    assert now == MIDNIGHT + 60
    assert (ledger.day_count, ledger.next_slot_at, ledger.paused_until) == (0, 0.0, 0.0)


def test_a_booking_inside_the_callers_transaction_commits_with_it(store):
    quota = key_quota(custom_key(per_second=4, per_day=100))
    now = MIDNIGHT - 3600
    with transaction.atomic():
        assert store.store.reserve(quota, background=False, now=now).day_count == 1
        assert store.store.reserve(quota, background=False, now=now).day_count == 2
    ledger, _ = store.store.read(quota, now=now)
    assert ledger.day_count == 2

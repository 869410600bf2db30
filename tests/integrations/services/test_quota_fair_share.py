"""Fair share of a key between its accounts, and account caps, held against every store.

The store is real; the clock is injected, so each run is exact and the same on every store.
"""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from integrations.services.quota import key_quota
from integrations.services.quota_stores import Outcome
from integrations.services.quota_stores.rules import AccountShare
from tests.factories import ConnectedAccountFactory
from tests.integrations.services.quota_support.fair_sim import jain, simulate
from tests.integrations.services.quota_support.stores import (
    STORES,
    StoreUnderTest,
    custom_key,
    store_under_test,
)

pytestmark = pytest.mark.django_db(transaction=True)

NOON = dt.datetime(2031, 3, 4, 12, tzinfo=dt.UTC).timestamp()
SPACING = 0.2625  # 4/s with the 5% margin


@pytest.fixture(params=STORES)
def store(request, settings) -> StoreUnderTest:
    return store_under_test(request, settings)


@pytest.fixture(autouse=True)
def policy(settings):
    settings.CC_QUOTA_MARGIN = 0.05
    settings.CC_QUOTA_BACKGROUND_HORIZON = 0.3
    settings.CC_QUOTA_DAY_GUARD = 5.0
    settings.CC_QUOTA_INTERACTIVE_RESERVE = 0.05
    settings.CC_QUOTA_FAIR_SHARE = True


def key_with_accounts(count: int, *, per_day: int = 100_000):
    """A 4/s key and ``count`` accounts on it: (quota, [account ids])."""
    key = custom_key(per_second=4, per_day=per_day)
    ids = [ConnectedAccountFactory(api_key=key).pk for _ in range(count)]
    return key_quota(key), ids


def test_ten_accounts_share_a_key_equally_whatever_their_callers(store):
    """Account 1 runs 16 callers, accounts 2-10 one each: all ten get a tenth of the key."""
    quota, ids = key_with_accounts(10)
    callers = {ids[0]: 16, **{account: 1 for account in ids[1:]}}
    result = simulate(store.store, quota, callers=callers, start=NOON, seconds=60)
    rates = result.rates(60)
    key_rate = sum(rates.values())
    assert key_rate >= 0.95 * 4 / 1.05  # the key stays as busy as without accounts
    assert jain(list(rates.values())) >= 0.98
    fair = key_rate / 10
    assert min(rates.values()) >= 0.9 * fair
    # Never two slots closer than one spacing.
    slots = sorted(result.slots)
    assert min(b - a for a, b in itertools.pairwise(slots)) >= SPACING - 1e-6


def test_first_come_first_served_when_fair_share_is_off(store, settings):
    settings.CC_QUOTA_FAIR_SHARE = False
    quota, (a, b, c) = key_with_accounts(3)
    result = simulate(store.store, quota, callers={a: 12, b: 1, c: 1}, start=NOON, seconds=60)
    rates = result.rates(60)
    # The account with the most callers takes most of the key: what fair share prevents.
    assert rates[a] > 4 * rates[b]
    assert jain(list(rates.values())) < 0.7


def test_weights_divide_the_key_in_proportion(store):
    quota, (light, heavy) = key_with_accounts(2)
    result = simulate(
        store.store,
        quota,
        callers={light: 4, heavy: 4},
        weights={light: 1.0, heavy: 3.0},
        start=NOON,
        seconds=60,
    )
    ratio = result.granted[heavy] / result.granted[light]
    assert 2.7 <= ratio <= 3.3


def test_an_account_wanting_less_than_its_share_gets_all_it_asks(store):
    """Account 2 calls 2 s after each answer (a fraction of its half): it never waits for its
    turn, only for the next free slot (at most the horizon and a couple of spacings ahead on a
    busy key), and the busy account 1 takes every slot it leaves."""
    quota, (busy, light) = key_with_accounts(2)
    alone = simulate(
        store.store, quota, callers={light: 1}, pauses={light: 2.0}, start=NOON, seconds=60
    )
    both = simulate(
        store.store,
        quota,
        callers={busy: 8, light: 1},
        pauses={light: 2.0},
        start=NOON + 600,
        seconds=60,
    )
    assert alone.granted[light] == 30
    longest_cycle = 2.0 + 0.02 + 0.3 + 2 * SPACING
    assert both.granted[light] >= 60 // longest_cycle
    assert sum(both.granted.values()) / 60 >= 0.95 * 4 / 1.05


def test_a_lone_account_books_exactly_as_a_key_without_accounts(store):
    quota, (account,) = key_with_accounts(1)
    share = AccountShare(account_id=account)
    first = [store.store.reserve(quota, background=True, now=NOON, share=share) for _ in range(3)]
    assert [b.outcome for b in first] == [Outcome.GRANTED, Outcome.GRANTED, Outcome.DEFERRED]
    assert first[1].at == pytest.approx(NOON + SPACING, abs=1e-5)
    # Its turn is the slot it will find, less the horizon.
    assert first[2].at == pytest.approx(NOON + 2 * SPACING - 0.3, abs=1e-5)
    back = store.store.reserve(
        quota,
        background=True,
        now=first[2].at,
        share=AccountShare(account_id=account, ticket=first[2].ticket),
    )
    assert (back.outcome, back.at) == (Outcome.GRANTED, pytest.approx(NOON + 2 * SPACING, abs=1e-5))


def test_an_account_cap_refuses_both_lanes_until_the_day_reopens(store):
    quota, (one, two) = key_with_accounts(2, per_day=1000)
    capped = AccountShare(account_id=one, cap=3)
    at = NOON
    for lane_background in (True, False, True):
        booking = store.store.reserve(quota, background=lane_background, now=at, share=capped)
        assert booking.outcome is Outcome.GRANTED
        at = booking.at + 0.01
    for lane_background in (True, False):
        refused = store.store.reserve(quota, background=lane_background, now=at, share=capped)
        assert refused.outcome is Outcome.CAPPED
        assert refused.day_count == 3
        midnight = (int(NOON // 86_400) + 1) * 86_400
        assert refused.at == pytest.approx(midnight + 5.0)
    # Others go on; the capped account's refusals booked nothing.
    other = store.store.reserve(quota, background=True, now=at, share=AccountShare(account_id=two))
    assert other.outcome is Outcome.GRANTED
    ledger, _ = store.store.read(quota, now=at)
    assert ledger.day_count == 4
    accounts, _ = store.store.read_accounts(quota, now=at)
    assert (accounts[one].day_count, accounts[two].day_count) == (3, 1)
    # The next day the cap starts again.
    tomorrow = midnight + 3600
    again = store.store.reserve(quota, background=True, now=tomorrow, share=capped)
    assert again.outcome is Outcome.GRANTED
    accounts, _ = store.store.read_accounts(quota, now=tomorrow)
    assert accounts[one].day_count == 1


def test_a_capped_account_under_load_never_passes_its_cap(store):
    quota, (capped, free) = key_with_accounts(2)
    result = simulate(
        store.store, quota, callers={capped: 6, free: 2}, caps={capped: 40}, start=NOON, seconds=60
    )
    assert result.granted[capped] == 40
    assert result.refused[capped] == 6  # each of its callers was told, once
    assert result.granted[free] >= 0.9 * (60 * 4 / 1.05 - 40)


# --- flows: an account's portal tokens and its own calls -----------------------------------


def test_an_account_splits_its_share_evenly_between_its_tokens(store):
    """Account A calls through token 1 with 12 callers and token 2 with one; account B has one
    caller of its own. B keeps half the key; A's half is split between its two tokens, so the
    busy app cannot starve the quiet one."""
    quota, (a, b) = key_with_accounts(2)
    busy, quiet = (a, 1), (a, 2)
    result = simulate(
        store.store, quota, callers={busy: 12, quiet: 1, b: 1}, start=NOON, seconds=60
    )
    rates = result.rates(60)
    key_rate = sum(rates.values())
    assert key_rate >= 0.95 * 4 / 1.05
    assert rates[b] == pytest.approx(key_rate / 2, rel=0.1)
    assert rates[busy] == pytest.approx(key_rate / 4, rel=0.1)
    assert rates[quiet] == pytest.approx(key_rate / 4, rel=0.1)
    slots = sorted(result.slots)
    assert min(later - earlier for earlier, later in itertools.pairwise(slots)) >= SPACING - 1e-6


def test_more_tokens_win_an_account_no_more_of_the_key(store):
    """Four tokens of account A against account B's own calls: still half each."""
    quota, (a, b) = key_with_accounts(2)
    callers = {(a, token): 2 for token in (1, 2, 3, 4)} | {b: 2}
    rates = simulate(store.store, quota, callers=callers, start=NOON, seconds=60).rates(60)
    a_rate = sum(rate for flow, rate in rates.items() if flow != b)
    assert a_rate == pytest.approx(rates[b], rel=0.1)
    assert jain([rates[(a, token)] for token in (1, 2, 3, 4)]) >= 0.98


def test_a_token_alone_on_its_account_takes_the_account_s_whole_share(store):
    """Work conserving: the account's own flow is idle, so its one busy token gets it all."""
    quota, (a, b) = key_with_accounts(2)
    rates = simulate(store.store, quota, callers={(a, 7): 6, b: 1}, start=NOON, seconds=60).rates(
        60
    )
    assert rates[(a, 7)] == pytest.approx(rates[b], rel=0.1)


def test_an_account_cap_counts_every_token_of_the_account(store):
    quota, (a,) = key_with_accounts(1, per_day=1000)
    at = NOON
    for token in (0, 1, 2):
        booking = store.store.reserve(
            quota, background=True, now=at, share=AccountShare(account_id=a, cap=3, token_id=token)
        )
        assert booking.outcome is Outcome.GRANTED
        at = booking.at + 0.01
    for token in (0, 1, 3):  # a token new today is held to the same cap
        refused = store.store.reserve(
            quota, background=False, now=at, share=AccountShare(account_id=a, cap=3, token_id=token)
        )
        assert (refused.outcome, refused.day_count) == (Outcome.CAPPED, 3)
    accounts, _ = store.store.read_accounts(quota, now=at)
    assert accounts[a].day_count == 3  # the account's flows reported as one
    tomorrow = (int(NOON // 86_400) + 1) * 86_400 + 3600
    again = store.store.reserve(
        quota, background=True, now=tomorrow, share=AccountShare(account_id=a, cap=3, token_id=2)
    )
    assert again.outcome is Outcome.GRANTED
    accounts, _ = store.store.read_accounts(quota, now=tomorrow)
    assert accounts[a].day_count == 1


def test_a_capped_account_under_load_through_tokens_never_passes_its_cap(store):
    quota, (capped, free) = key_with_accounts(2)
    callers = {(capped, 1): 3, (capped, 2): 3, capped: 2, free: 2}
    result = simulate(
        store.store, quota, callers=callers, caps={capped: 40}, start=NOON, seconds=60
    )
    assert sum(n for flow, n in result.granted.items() if flow != free) == 40
    assert sum(n for flow, n in result.refused.items() if flow != free) == 8


# --- bounded interactive calls: the proxy's default lane -------------------------------------

MAX_WAIT = 5.0


def test_an_app_flooding_the_interactive_lane_leaves_the_others_their_share(store, settings):
    """Account A's token 1 keeps 40 proxied calls in flight (more than fit in the 5 s bound),
    its token 2 and account B one each, all interactive: the quiet ones are served at their
    share, not told 429 behind a bound the busy app filled."""
    quota, (a, b) = key_with_accounts(2)
    busy, quiet = (a, 1), (a, 2)
    callers = {busy: 40, quiet: 1, b: 1}
    bounded = dict.fromkeys(callers, MAX_WAIT)

    result = simulate(store.store, quota, callers=callers, start=NOON, seconds=60, bounded=bounded)

    rates = {flow: result.granted[flow] / 60 for flow in callers}
    key_rate = sum(rates.values())
    assert key_rate >= 0.95 * 4 / 1.05
    assert rates[quiet] >= 0.9 * key_rate / 4  # a quarter: half of A's half
    assert rates[b] >= 0.75 * key_rate / 2  # one caller, each call waiting its slot
    assert rates[busy] <= key_rate / 2
    slots = sorted(result.slots)
    assert min(later - earlier for earlier, later in itertools.pairwise(slots)) >= SPACING - 1e-6

    settings.CC_QUOTA_FAIR_SHARE = False  # first come, first served: the flood takes it all
    quota, (a, b) = key_with_accounts(2)
    callers = {(a, 1): 40, (a, 2): 1, b: 1}
    starved = simulate(
        store.store,
        quota,
        callers=callers,
        start=NOON,
        seconds=60,
        bounded=dict.fromkeys(callers, MAX_WAIT),
    )
    served = sum(starved.granted.values())
    assert starved.granted[(a, 2)] < 0.1 * served / 4 and starved.granted[b] < 0.1 * served / 2


def test_two_accounts_flooding_the_interactive_lane_split_the_key(store, settings):
    """40 calls in flight for A, 8 for B: half the key each, where first come, first served
    leaves B nothing once A fills the bound."""
    runs = {}
    for fair in (True, False):
        settings.CC_QUOTA_FAIR_SHARE = fair
        quota, (a, b) = key_with_accounts(2)
        result = simulate(
            store.store,
            quota,
            callers={a: 40, b: 8},
            start=NOON,
            seconds=60,
            bounded={a: MAX_WAIT, b: MAX_WAIT},
        )
        runs[fair] = [result.granted[a] / 60, result.granted[b] / 60]
    assert sum(runs[True]) >= 0.95 * 4 / 1.05
    assert jain(runs[True]) >= 0.98
    assert runs[False][1] < 0.1 * sum(runs[False]) / 2


def test_a_lone_flow_on_the_interactive_lane_books_as_without_fair_share(store, settings):
    """Alone on the key the turn bound is the slot bound: the same slots, the same refusals."""
    runs = []
    for fair in (True, False):
        settings.CC_QUOTA_FAIR_SHARE = fair
        quota, (a,) = key_with_accounts(1)
        result = simulate(
            store.store, quota, callers={a: 40}, start=NOON, seconds=30, bounded={a: MAX_WAIT}
        )
        runs.append((sorted(result.slots), result.busy[a]))
    assert runs[0] == runs[1]
    assert runs[0][1] > 0  # the bound was reached

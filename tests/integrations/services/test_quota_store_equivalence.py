"""Every store gives the answers of the Python rules, booking for booking, on random traffic.

The PostgreSQL function and the Redis script are copies of ``rules.book_call``; the scenario
tests hold them to the same outcomes in the cases someone thought of. Here seeded random
sequences of bookings (both lanes, bounded and unbounded interactive calls, several accounts
and portal tokens, weights, caps, tickets brought back, fair share on and off, a UTC midnight
crossed) go to the store and to the rules on an in-memory ledger, and every answer must match.
"""

from __future__ import annotations

import math
import random

import pytest

from integrations.services.quota import key_quota
from integrations.services.quota_stores import Outcome, rules
from integrations.services.quota_stores.rules import AccountLedger, AccountShare, Booking
from tests.factories import ConnectedAccountFactory
from tests.integrations.services.quota_support.stores import (
    STORES,
    StoreUnderTest,
    custom_key,
    store_under_test,
)

pytestmark = pytest.mark.django_db(transaction=True)

#: Two minutes before a UTC midnight: the runs cross it, day guard included.
START = 22_000 * 86_400 - 120.0


@pytest.fixture(params=STORES)
def store(request, settings) -> StoreUnderTest:
    settings.CC_QUOTA_MARGIN = 0.05
    settings.CC_QUOTA_BACKGROUND_HORIZON = 0.3
    settings.CC_QUOTA_DAY_GUARD = 5.0
    settings.CC_QUOTA_INTERACTIVE_RESERVE = 0.1
    return store_under_test(request, settings)


class Reference:
    """``rules.book_call`` on an in-memory ledger, reading the flows as the stores do."""

    def __init__(self) -> None:
        self.ledger = rules.Ledger()
        self.flows: dict[tuple[int, int], AccountLedger] = {}

    def reserve(self, quota, *, background, now, share, max_wait) -> Booking:
        flow = (share.account_id, share.token_id)
        heaviest: dict[int, float] = {}
        for (account, _), other in self.flows.items():
            if account != share.account_id and other.active_until > now:
                heaviest[account] = max(heaviest.get(account, 0.0), other.weight)
        fair = rules.in_fair_share(quota, background, max_wait)
        ledger, changed, booking = rules.book_call(
            self.ledger,
            quota,
            background=background,
            now=now,
            share=share,
            account=self.flows.get(flow),
            others_weight=sum(heaviest.values()) if fair else 0.0,
            siblings=[f for (a, t), f in self.flows.items() if a == flow[0] and t != flow[1]],
            max_wait=max_wait,
        )
        if ledger is not None:
            self.ledger = ledger
        if changed is not None:
            self.flows[flow] = changed
        return booking


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_the_store_answers_as_the_rules_do(store, settings, seed):
    rng = random.Random(seed)
    settings.CC_QUOTA_FAIR_SHARE = seed != 5  # one run first come, first served
    quota = key_quota(custom_key(per_second=4, per_day=rng.choice([60, 400])))
    accounts = [ConnectedAccountFactory(api_key_id=quota.ledger_id).pk for _ in range(3)]
    weights = {account: rng.choice([1.0, 1.0, 2.0, 5.0]) for account in accounts}
    caps = {account: rng.choice([None, None, 25]) for account in accounts}
    reference, tickets, now = Reference(), {}, START
    outcomes = set()
    for step in range(300):
        now += rng.choice([0.0, 0.0, 0.01, 0.05, 0.2, 0.3, 1.0, 3.0])
        account, token = rng.choice(accounts), rng.choice([0, 0, 7, 9])
        background = rng.random() < 0.4
        max_wait = None if background or rng.random() < 0.2 else rng.choice([0.0, 1.0, 5.0])
        ticket = tickets.pop((account, token), None) if background else None
        share = AccountShare(
            account_id=account,
            weight=weights[account],
            cap=caps[account],
            ticket=ticket if rng.random() < 0.7 else None,
            token_id=token,
        )
        kwargs = {"background": background, "now": now, "share": share, "max_wait": max_wait}
        expected = reference.reserve(quota, **kwargs)
        got = store.store.reserve(quota, **kwargs)
        where = f"seed {seed} step {step}: {kwargs}"
        assert got.outcome is expected.outcome, where
        assert _same(got.at, expected.at), (where, got, expected)
        if got.outcome is not Outcome.DEFERRED:
            assert (got.day, got.day_count) == (expected.day, expected.day_count), where
        assert _same(got.ticket, expected.ticket), (where, got, expected)
        if got.ticket is not None:
            tickets[(account, token)] = got.ticket
        outcomes.add(got.outcome)
    counted, _ = store.store.read_accounts(quota, now=now)
    for account in accounts:
        flows = [f for (a, _), f in reference.flows.items() if a == account]
        expected_count = sum(
            rules.account_rolled(f, rules.day_number(now - 5.0)).day_count for f in flows
        )
        got_count = counted[account].day_count if account in counted else 0
        assert got_count == expected_count, (seed, account)
    assert {Outcome.GRANTED, Outcome.BUSY} <= outcomes  # the bounded lane was reached

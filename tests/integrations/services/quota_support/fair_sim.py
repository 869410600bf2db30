"""Callers of several accounts booking one key, on a simulated clock, against a real store.

Every caller books, and when granted "sends" at its slot and books again ``call_seconds``
later; when deferred it comes back at its turn with its ticket. The store decides everything
(``now=`` is injected), so the run is deterministic and every store must give the same shares.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field

from integrations.services.quota_stores import Outcome, QuotaStore
from integrations.services.quota_stores.rules import AccountShare, KeyQuota


@dataclass
class SimResult:
    granted: Counter = field(default_factory=Counter)
    asks: Counter = field(default_factory=Counter)
    slots: list[float] = field(default_factory=list)
    refused: Counter = field(default_factory=Counter)

    def rates(self, seconds: float) -> dict[int, float]:
        return {account: n / seconds for account, n in self.granted.items()}


def simulate(
    store: QuotaStore,
    quota: KeyQuota,
    *,
    callers: dict[int, int],
    start: float,
    seconds: float,
    weights: dict[int, float] | None = None,
    caps: dict[int, int] | None = None,
    call_seconds: float = 0.02,
    pauses: dict[int, float] | None = None,
) -> SimResult:
    """Run ``callers`` ({account_id: number of callers}) for ``seconds`` from ``start``; an
    account in ``pauses`` waits that long after each call before its next."""
    weights, caps, pauses = weights or {}, caps or {}, pauses or {}
    result = SimResult()
    queue: list[tuple[float, int, int, float | None]] = []
    serial = 0
    for account, count in callers.items():
        for _ in range(count):
            heapq.heappush(queue, (start, serial, account, None))
            serial += 1
    end = start + seconds
    while queue:
        at, caller, account, ticket = heapq.heappop(queue)
        if at >= end:
            continue
        share = AccountShare(
            account_id=account,
            weight=weights.get(account, 1.0),
            cap=caps.get(account),
            ticket=ticket,
        )
        booking = store.reserve(quota, background=True, now=at, share=share)
        result.asks[account] += 1
        if booking.outcome is Outcome.GRANTED:
            if booking.at < end:
                result.granted[account] += 1
                result.slots.append(booking.at)
            after = call_seconds + pauses.get(account, 0.0)
            heapq.heappush(queue, (booking.at + after, caller, account, None))
        elif booking.outcome is Outcome.DEFERRED:
            heapq.heappush(queue, (booking.at, caller, account, booking.ticket))
        else:
            result.refused[account] += 1  # capped or spent: this caller stops for the day
    return result


def jain(values: list[float]) -> float:
    """Jain's fairness index: 1 when all are equal, 1/n when one takes everything."""
    total = sum(values)
    squares = sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else 1.0

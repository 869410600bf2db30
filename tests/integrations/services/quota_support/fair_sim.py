"""Callers of several accounts booking one key, on a simulated clock, against a real store.

Every caller books, and when granted "sends" at its slot and books again ``call_seconds``
later; when deferred it comes back at its turn with its ticket. A caller of a flow in
``bounded`` books on the interactive lane with that maximum wait, as the proxy does, and when
told BUSY asks again after the Retry-After the proxy would answer. The store decides everything
(``now=`` is injected), so the run is deterministic and every store must give the same shares.

Callers are counted per flow: an account id (the portal's own calls) or ``(account id, portal
token id)`` (calls through the proxy with that token). Results are keyed the same way.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field

from integrations.services.quota_stores import Outcome, QuotaStore
from integrations.services.quota_stores.rules import AccountShare, KeyQuota, busy_retry_after

Flow = int | tuple[int, int]


@dataclass
class SimResult:
    granted: Counter = field(default_factory=Counter)
    asks: Counter = field(default_factory=Counter)
    slots: list[float] = field(default_factory=list)
    refused: Counter = field(default_factory=Counter)
    busy: Counter = field(default_factory=Counter)
    #: Per flow, the longest a granted call waited for its slot.
    longest_wait: Counter = field(default_factory=Counter)

    def rates(self, seconds: float) -> dict[Flow, float]:
        return {account: n / seconds for account, n in self.granted.items()}


def simulate(
    store: QuotaStore,
    quota: KeyQuota,
    *,
    callers: dict[Flow, int],
    start: float,
    seconds: float,
    weights: dict[int, float] | None = None,
    caps: dict[int, int] | None = None,
    call_seconds: float = 0.02,
    pauses: dict[Flow, float] | None = None,
    bounded: dict[Flow, float] | None = None,
) -> SimResult:
    """Run ``callers`` ({flow: number of callers}) for ``seconds`` from ``start``; a flow in
    ``pauses`` waits that long after each call before its next. ``weights`` and ``caps`` are
    per account."""
    weights, caps, pauses, bounded = weights or {}, caps or {}, pauses or {}, bounded or {}
    result = SimResult()
    flows = list(callers)
    queue: list[tuple[float, int, int, float | None]] = []
    serial = 0
    for index, count in enumerate(callers.values()):
        for _ in range(count):
            heapq.heappush(queue, (start, serial, index, None))
            serial += 1
    end = start + seconds
    while queue:
        at, caller, index, ticket = heapq.heappop(queue)
        if at >= end:
            continue
        flow = flows[index]
        account, token = flow if isinstance(flow, tuple) else (flow, 0)
        share = AccountShare(
            account_id=account,
            weight=weights.get(account, 1.0),
            cap=caps.get(account),
            ticket=ticket,
            token_id=token,
        )
        max_wait = bounded.get(flow)
        booking = store.reserve(
            quota, background=max_wait is None, now=at, share=share, max_wait=max_wait
        )
        result.asks[flow] += 1
        if booking.outcome is Outcome.GRANTED:
            if booking.at < end:
                result.granted[flow] += 1
                result.slots.append(booking.at)
                result.longest_wait[flow] = max(result.longest_wait[flow], booking.wait)
            after = call_seconds + pauses.get(flow, 0.0)
            heapq.heappush(queue, (booking.at + after, caller, index, None))
        elif booking.outcome is Outcome.DEFERRED:
            heapq.heappush(queue, (booking.at, caller, index, booking.ticket))
        elif booking.outcome is Outcome.BUSY:
            result.busy[flow] += 1
            retry_after = busy_retry_after(booking.wait, max_wait)
            heapq.heappush(queue, (at + retry_after, caller, index, None))
        else:
            result.refused[flow] += 1  # capped or spent: this caller stops for the day
    return result


def jain(values: list[float]) -> float:
    """Jain's fairness index: 1 when all are equal, 1/n when one takes everything."""
    total = sum(values)
    squares = sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else 1.0

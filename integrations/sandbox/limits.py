"""CC's per-client limits, counted on arrival.

Rules, all keyed by client_id (the API key), shared by every account connected through it
(Reference: https://developer.constantcontact.com/api_guide/rate_limits.html):

* **per second**: at most ``per_second`` requests in any sliding 1-second window ``(t-1, t]``
  of the real monotonic clock, else 429 ``throttled``. The window must not follow the sandbox
  clock: advancing that clock by a day must not empty the window, and slot spacing in the
  portal is measured in real time too.
* **per day**: at most ``per_day`` requests per UTC day of the *sandbox* clock, else 429
  ``quota_exceeded``; the day rolls over at 00:00 UTC.
* **token endpoint**: at most ``token_requests_per_second`` token requests per client_id in any
  1-second window, else 429.

Whether CC counts rejected requests is not documented. With ``count_rejected`` (the default)
every arrival is counted: a throttled request takes a place in the window and a unit of the
day, so a client that keeps hammering stays throttled. That is the conservative, CC-like
choice; ``count_rejected=False`` counts only accepted requests. Requests refused for the
daily quota never consume the day (it is spent already) but, with ``count_rejected``, do take a
place in the window.

Besides admitting, the limiter keeps the figures the stats report: the most *accepted*
requests seen in any 1-second window and, separately, the most *arrivals*.
"""

from __future__ import annotations

import datetime as dt
import enum
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from integrations.constant_contact import errors as cc_errors

WINDOW_SECONDS = 1.0


class Verdict(enum.Enum):
    ACCEPTED = "accepted"
    THROTTLED = cc_errors.THROTTLED
    QUOTA_EXCEEDED = cc_errors.QUOTA_EXCEEDED


def _prune(times: deque[float], now: float) -> None:
    horizon = now - WINDOW_SECONDS
    while times and times[0] <= horizon:
        times.popleft()


@dataclass
class _Meter:
    arrivals: deque[float] = field(default_factory=deque)
    accepted: deque[float] = field(default_factory=deque)
    max_arrivals: int = 0
    max_accepted: int = 0
    day: dt.date | None = None
    day_count: int = 0  # units of today's budget consumed
    day_arrivals: int = 0

    def roll_day(self, today: dt.date) -> None:
        if self.day != today:
            self.day, self.day_count, self.day_arrivals = today, 0, 0

    def snapshot(self, today: dt.date) -> dict[str, Any]:
        self.roll_day(today)
        return {
            "max_accepted_per_second": self.max_accepted,
            "max_arrivals_per_second": self.max_arrivals,
            "today": {
                "date": today.isoformat(),
                "count": self.day_count,
                "arrivals": self.day_arrivals,
            },
        }


class Limiter:
    """Admission for API and token requests; one lock, O(1) amortised per request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._api: dict[str, _Meter] = {}
        self._token: dict[str, _Meter] = {}

    def admit_api(
        self,
        client_id: str,
        *,
        per_second: int,
        per_day: int,
        today: dt.date,
        count_rejected: bool,
    ) -> Verdict:
        """Count one API arrival for ``client_id`` and say whether CC would serve it."""
        now = time.monotonic()
        with self._lock:
            meter = self._api.setdefault(client_id, _Meter())
            return self._admit(meter, now, per_second, per_day, today, count_rejected)

    def admit_token(self, client_id: str, *, per_second: int, count_rejected: bool) -> Verdict:
        """Count one token-endpoint arrival; THROTTLED means answer 429."""
        now = time.monotonic()
        with self._lock:
            meter = self._token.setdefault(client_id, _Meter())
            return self._admit(meter, now, per_second, None, None, count_rejected)

    @staticmethod
    def _admit(
        meter: _Meter,
        now: float,
        per_second: int,
        per_day: int | None,
        today: dt.date | None,
        count_rejected: bool,
    ) -> Verdict:
        _prune(meter.arrivals, now)
        _prune(meter.accepted, now)
        window = meter.arrivals if count_rejected else meter.accepted
        in_window = len(window)
        meter.arrivals.append(now)
        meter.max_arrivals = max(meter.max_arrivals, len(meter.arrivals))
        if today is not None:
            meter.roll_day(today)
            meter.day_arrivals += 1
            if per_day is not None and meter.day_count >= per_day:
                return Verdict.QUOTA_EXCEEDED
        if in_window >= per_second:
            if count_rejected and today is not None:
                meter.day_count += 1
            return Verdict.THROTTLED
        meter.accepted.append(now)
        meter.max_accepted = max(meter.max_accepted, len(meter.accepted))
        if today is not None:
            meter.day_count += 1
        return Verdict.ACCEPTED

    def snapshot(self, client_id: str, today: dt.date) -> dict[str, Any]:
        """Window maxima and today's counts for one client (zeros if never seen)."""
        with self._lock:
            api = self._api.get(client_id) or _Meter()
            token = self._token.get(client_id) or _Meter()
            figures = api.snapshot(today)
            figures["max_token_requests_per_second"] = token.max_accepted
            return figures

    def client_ids(self) -> set[str]:
        with self._lock:
            return set(self._api) | set(self._token)

    def reset_maxima(self) -> None:
        """Forget the window maxima (stats reset); the live windows keep limiting."""
        with self._lock:
            for meter in (*self._api.values(), *self._token.values()):
                meter.max_accepted = meter.max_arrivals = 0

    def reset(self) -> None:
        with self._lock:
            self._api.clear()
            self._token.clear()

"""The sandbox clock: real UTC time shifted by an offset that tests can move.

Everything CC measures in wall-clock time (token and code expiry, refresh-token idleness, the
UTC day behind the daily quota, activity progress) reads this clock, so a test can jump a day
ahead instead of waiting. The per-second rate window deliberately does not: it uses the real
monotonic clock (see ``limits.py``).
"""

from __future__ import annotations

import datetime as dt
import threading
import time


def iso(timestamp: float) -> str:
    """ISO-8601 in UTC with milliseconds, as CC writes it: ``2016-01-23T13:48:44.108Z``."""
    moment = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def parse_iso(value: str) -> float:
    """Seconds since the epoch for an ISO-8601 date-time (naive means UTC).

    Raises ValueError for anything else.
    """
    moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


class SandboxClock:
    """Thread-safe wall clock with an adjustable offset; it keeps ticking after a move."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def time(self) -> float:
        """Sandbox time as seconds since the epoch."""
        return time.time() + self._offset

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.time(), dt.UTC)

    def today(self) -> dt.date:
        """The sandbox's current UTC date: CC's daily quota resets at 00:00 UTC."""
        return self.now().date()

    @property
    def offset(self) -> float:
        return self._offset

    def advance(self, seconds: float) -> None:
        """Move the clock forward (or back, with a negative value)."""
        with self._lock:
            self._offset += float(seconds)

    def set(self, timestamp: float) -> None:
        """Make the clock read ``timestamp`` now; it keeps ticking from there."""
        with self._lock:
            self._offset = float(timestamp) - time.time()

    def reset(self) -> None:
        with self._lock:
            self._offset = 0.0

"""Injected faults: the next N API or token responses fail the way CC (or the network) can.

API faults (taken by requests that passed the rate limiter, in the order injected):

* ``500`` / ``503`` — CC's error array with a 500/503 status;
* ``timeout`` — hold the connection ``hold_seconds`` (past the client's read timeout), then
  answer 504 or, with ``then="reset"``, drop the connection;
* ``reset`` — close the socket abruptly (TCP RST) without any response.

Token faults: ``429``, ``503``, ``invalid_grant``. A fault may be scoped to one client_id and,
for API faults, to a path prefix. Arrival jitter delays each API and token request by a random
``min_ms``-``max_ms`` *before* it is counted, so limits see the jittered arrival time.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

API_FAULT_KINDS = ("500", "503", "timeout", "reset")
TOKEN_FAULT_KINDS = ("429", "503", "invalid_grant")
TIMEOUT_ENDINGS = ("504", "reset")


class DropConnection(ConnectionAbortedError):
    """Raised by the app to make the server reset the connection without answering."""


@dataclass
class ApiFault:
    kind: str
    remaining: int
    client_id: str | None = None
    path: str | None = None
    hold_seconds: float = 30.0
    then: str = "504"

    def matches(self, client_id: str, path: str) -> bool:
        if self.client_id is not None and self.client_id != client_id:
            return False
        return self.path is None or path.startswith(self.path)


@dataclass
class TokenFault:
    kind: str
    remaining: int
    client_id: str | None = None

    def matches(self, client_id: str) -> bool:
        return self.client_id is None or self.client_id == client_id


class Faults:
    """Pending faults and the jitter range; every method is thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._api: deque[ApiFault] = deque()
        self._token: deque[TokenFault] = deque()
        self._jitter = (0.0, 0.0)
        self._release = threading.Event()

    def add_api(self, fault: ApiFault) -> None:
        with self._lock:
            self._api.append(fault)

    def add_token(self, fault: TokenFault) -> None:
        with self._lock:
            self._token.append(fault)

    def take_api(self, client_id: str, path: str) -> ApiFault | None:
        """Consume one unit of the first pending API fault that applies, if any."""
        with self._lock:
            return self._take(self._api, lambda fault: fault.matches(client_id, path))

    def take_token(self, client_id: str) -> TokenFault | None:
        with self._lock:
            return self._take(self._token, lambda fault: fault.matches(client_id))

    @staticmethod
    def _take(queue: deque, applies) -> Any:
        for fault in queue:
            if applies(fault):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    queue.remove(fault)
                return fault
        return None

    def set_jitter(self, min_ms: float, max_ms: float) -> None:
        if min_ms < 0 or max_ms < min_ms:
            raise ValueError("jitter needs 0 <= min_ms <= max_ms")
        with self._lock:
            self._jitter = (float(min_ms), float(max_ms))

    def jitter_seconds(self) -> float:
        low, high = self._jitter
        if high <= 0:
            return 0.0
        return random.uniform(low, high) / 1000.0

    def hold(self, seconds: float) -> None:
        """Sleep ``seconds``, cut short by :meth:`clear` (so a reset never waits on a hold)."""
        self._release.wait(timeout=max(0.0, seconds))

    def clear(self) -> None:
        """Drop every pending fault, the jitter, and wake connections being held."""
        with self._lock:
            self._api.clear()
            self._token.clear()
            self._jitter = (0.0, 0.0)
            release, self._release = self._release, threading.Event()
        release.set()

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "api": [asdict(fault) for fault in self._api],
                "token": [asdict(fault) for fault in self._token],
                "jitter": {"min_ms": self._jitter[0], "max_ms": self._jitter[1]},
            }

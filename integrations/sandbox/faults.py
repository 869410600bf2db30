"""Injected faults: the next N API or token responses fail the way CC (or the network) can.

API faults (taken by requests that passed the rate limiter, in the order injected):

* ``500`` / ``503`` — CC's error array with a 500/503 status;
* ``timeout`` — hold the connection ``hold_seconds`` (past the client's read timeout), then
  answer 504 or, with ``then="reset"``, drop the connection. With ``applied_first`` the request
  is carried out first (an activity is created, a refresh token rotated) and only its answer
  is lost, as when CC's gateway times out on a request its backend completed;
* ``reset`` — close the socket abruptly (TCP RST) without any response.

Token faults: ``429``, ``503``, ``invalid_grant``, ``timeout`` (held as above, then 503 or a
reset; ``applied_first`` issues the new tokens before the hold). A fault may be scoped to one
client_id and, for API faults, to a path prefix and an HTTP method. Arrival jitter delays each
API and token request by a random ``min_ms``-``max_ms`` *before* it is counted, so limits see
the jittered arrival time.

Activity faults make the next N bulk activities (optionally of one kind) end ``failed``,
``timed_out`` or ``cancelled`` instead of ``completed``: CC's other end states, in which the
activity applied nothing.

Every fault that fires is counted in :attr:`Faults.injected` (``"api:500"``,
``"token:timeout"``, ``"activity:failed"``, ``"outage"``…), so a test reads how many faults
really happened instead of assuming it.
"""

from __future__ import annotations

import random
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

API_FAULT_KINDS = ("500", "503", "timeout", "reset")
TOKEN_FAULT_KINDS = ("429", "503", "invalid_grant", "timeout")
TIMEOUT_ENDINGS = ("504", "reset")
# CC's terminal activity states other than "completed" (swagger ``Activity.state``).
ACTIVITY_END_STATES = ("failed", "timed_out", "cancelled")


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
    method: str | None = None
    applied_first: bool = False

    def matches(self, client_id: str, path: str, method: str) -> bool:
        if self.client_id is not None and self.client_id != client_id:
            return False
        if self.method is not None and self.method != method:
            return False
        return self.path is None or path.startswith(self.path)


@dataclass
class TokenFault:
    kind: str
    remaining: int
    client_id: str | None = None
    hold_seconds: float = 30.0
    then: str = "503"
    applied_first: bool = False

    def matches(self, client_id: str) -> bool:
        return self.client_id is None or self.client_id == client_id


@dataclass
class ActivityFault:
    state: str
    remaining: int
    kind: str | None = None  # an activity kind (``contacts_json_import``…); None: any

    def matches(self, kind: str) -> bool:
        return self.kind is None or self.kind == kind


class Faults:
    """Pending faults and the jitter range; every method is thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._api: deque[ApiFault] = deque()
        self._token: deque[TokenFault] = deque()
        self._activity: deque[ActivityFault] = deque()
        self._jitter = (0.0, 0.0)
        self._release = threading.Event()
        self.injected: Counter[str] = Counter()
        # Set by the server: stop listening for that many seconds (``POST /faults/outage``).
        self.outage_starter: Callable[[float], None] | None = None

    def add_api(self, fault: ApiFault) -> None:
        with self._lock:
            self._api.append(fault)

    def add_token(self, fault: TokenFault) -> None:
        with self._lock:
            self._token.append(fault)

    def add_activity(self, fault: ActivityFault) -> None:
        with self._lock:
            self._activity.append(fault)

    def take_api(self, client_id: str, path: str, method: str) -> ApiFault | None:
        """Consume one unit of the first pending API fault that applies, if any."""
        with self._lock:
            fault = self._take(self._api, lambda f: f.matches(client_id, path, method))
            if fault is not None:
                self.injected[f"api:{fault.kind}"] += 1
            return fault

    def take_token(self, client_id: str) -> TokenFault | None:
        with self._lock:
            fault = self._take(self._token, lambda f: f.matches(client_id))
            if fault is not None:
                self.injected[f"token:{fault.kind}"] += 1
            return fault

    def take_activity(self, kind: str) -> str | None:
        """The end state the next activity of ``kind`` must take, if a fault says so."""
        with self._lock:
            fault = self._take(self._activity, lambda f: f.matches(kind))
            if fault is None:
                return None
            self.injected[f"activity:{fault.state}"] += 1
            return fault.state

    def count(self, name: str) -> None:
        """Count a fault injected elsewhere (an outage of the listener)."""
        with self._lock:
            self.injected[name] += 1

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
            self._activity.clear()
            self._jitter = (0.0, 0.0)
            release, self._release = self._release, threading.Event()
        release.set()

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "api": [asdict(fault) for fault in self._api],
                "token": [asdict(fault) for fault in self._token],
                "activity": [asdict(fault) for fault in self._activity],
                "jitter": {"min_ms": self._jitter[0], "max_ms": self._jitter[1]},
                "injected": dict(self.injected),
            }

    def injected_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.injected)

    def reset_injected(self) -> None:
        with self._lock:
            self.injected.clear()

"""Exact per-client counters of what the sandbox saw and answered.

Other tests assert that the portal's own audit equals these figures, so every API and token
request is recorded exactly once, with its outcome, *before* any byte of the response is sent
(a timeout fault records its outcome when the hold begins, a connection reset when it is
decided). Requests carrying no identifiable client are recorded under ``""``.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from integrations.constant_contact.errors import QUOTA_EXCEEDED, THROTTLED

# Outcomes that are not a plain HTTP status: CC's two 429 error keys (THROTTLED and
# QUOTA_EXCEEDED, imported above) and two faults.
TIMEOUT = "timeout"
RESET = "reset"


@dataclass
class _Counters:
    requests: int = 0
    accepted: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_path: dict[str, Counter[str]] = field(default_factory=dict)
    throttled: int = 0
    quota_exceeded: int = 0
    timeouts: int = 0
    resets: int = 0
    token_requests: int = 0
    token_by_status: Counter[str] = field(default_factory=Counter)
    token_errors: Counter[str] = field(default_factory=Counter)
    token_throttled: int = 0


def _status_class(by_status: Counter[str], first_digit: str) -> int:
    return sum(count for status, count in by_status.items() if status.startswith(first_digit))


class Stats:
    """Counters keyed by client_id; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[str, _Counters] = {}

    def record_api(
        self, client_id: str, route: str, *, status: int | None, outcome: str | None = None
    ) -> None:
        """One API request: ``status`` is the HTTP status sent (None if none was sent);
        ``outcome`` names a limiter verdict or fault (throttled, quota_exceeded, timeout, reset).
        """
        key = str(int(status)) if status is not None else (outcome or "none")
        with self._lock:
            counters = self._clients.setdefault(client_id, _Counters())
            counters.requests += 1
            if outcome == THROTTLED:
                counters.throttled += 1
            elif outcome == QUOTA_EXCEEDED:
                counters.quota_exceeded += 1
            else:
                counters.accepted += 1
                if outcome == TIMEOUT:
                    counters.timeouts += 1
                elif outcome == RESET:
                    counters.resets += 1
            counters.by_status[key] += 1
            counters.by_path.setdefault(route, Counter())[key] += 1

    def record_token(
        self, client_id: str, *, status: int, error: str | None, throttled: bool = False
    ) -> None:
        """One token-endpoint request and its answer (``error`` is the OAuth error code)."""
        with self._lock:
            counters = self._clients.setdefault(client_id, _Counters())
            counters.token_requests += 1
            counters.token_by_status[str(int(status))] += 1
            if error:
                counters.token_errors[error] += 1
            if throttled:
                counters.token_throttled += 1

    def client_ids(self) -> set[str]:
        with self._lock:
            return set(self._clients)

    def snapshot(self, client_id: str) -> dict[str, Any]:
        with self._lock:
            c = self._clients.get(client_id) or _Counters()
            return {
                "client_id": client_id,
                "requests": c.requests,
                "accepted": c.accepted,
                "status_2xx": _status_class(c.by_status, "2"),
                "status_4xx": _status_class(c.by_status, "4"),
                "status_5xx": _status_class(c.by_status, "5"),
                "unauthorized": c.by_status["401"],
                "forbidden": c.by_status["403"],
                "throttled": c.throttled,
                "quota_exceeded": c.quota_exceeded,
                "timeouts": c.timeouts,
                "resets": c.resets,
                "token_requests": c.token_requests,
                "token_2xx": _status_class(c.token_by_status, "2"),
                "token_429": c.token_by_status["429"],
                "token_throttled": c.token_throttled,
                "invalid_grant": c.token_errors["invalid_grant"],
                "token_errors": dict(c.token_errors),
                "by_status": dict(c.by_status),
                "by_path": {route: dict(counts) for route, counts in c.by_path.items()},
            }

    def reset(self) -> None:
        with self._lock:
            self._clients.clear()

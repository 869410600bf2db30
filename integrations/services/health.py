"""Which of the portal's dependencies is down right now, in words for the pages' banner."""

from __future__ import annotations

import threading
import time

from ccportal.cache import cache_outage
from integrations.services.quota import quota_store

#: How long one look at the quota store stands for (each process looks at most this often).
STORE_LOOK_SECONDS = 5.0

_lock = threading.Lock()
_store_look: tuple[float, str | None] = (float("-inf"), None)


def _store_problem() -> str | None:
    global _store_look
    looked_at, problem = _store_look
    if time.monotonic() - looked_at < STORE_LOOK_SECONDS:
        return problem
    with _lock:
        try:
            problem = quota_store().problem()
        except Exception as exc:  # a store that cannot even be built is a problem to show
            problem = f"The quota ledger cannot be reached ({type(exc).__name__})."
        _store_look = (time.monotonic(), problem)
    return problem


def outages() -> list[str]:
    """One sentence per dependency that is down: what is affected and what still works."""
    found = []
    if problem := cache_outage():
        found.append(
            f"{problem}. Logins, Connect limits and cached lists run on the database meanwhile."
        )
    if problem := _store_problem():
        found.append(
            f"{problem} No call to Constant Contact is sent until it is back; running syncs "
            "pause and go on by themselves."
        )
    return found

"""Work the gateway tests hand to real OS processes (see tests.support_procs)."""

from __future__ import annotations

import time
from typing import Any

from tests.support_procs import slots_booked


def _account(account_id: int):
    from integrations.models import ConnectedAccount

    return ConnectedAccount.objects.select_related("api_key").get(pk=account_id)


def _wait_for(start: float) -> None:
    delay = start - time.time()
    if delay > 0:
        time.sleep(delay)


def hammer(task: dict[str, Any]) -> dict[str, Any]:
    """Call ``GET /contact_lists`` through ``cc_call`` back to back until ``until``; records
    every send slot this process booked (epoch seconds on the ledger's clock)."""
    from integrations.constant_contact.errors import CCError
    from integrations.services import quota
    from integrations.services.gateway import cc_call

    account = _account(task["account_id"])
    answered = failed = 0
    errors: list[str] = []
    # quota_acquire looks quota_reserve up on each ask.
    with slots_booked(quota, "quota_reserve") as booked:
        _wait_for(task["start"])
        while time.time() < task["until"]:
            try:
                cc_call(account=account, method="GET", path="/contact_lists", lane=task["lane"])
                answered += 1
            except CCError as exc:
                failed += 1
                errors.append(str(exc))
    return {"answered": answered, "failed": failed, "errors": errors, "slots": booked}


def drain(task: dict[str, Any]) -> dict[str, int]:
    """Call through ``cc_call`` until the key's budget for ``lane`` is spent."""
    from integrations.constant_contact.errors import CCError
    from integrations.services.gateway import cc_call
    from integrations.services.quota import QuotaExhausted

    account = _account(task["account_id"])
    _wait_for(task["start"])
    answered = failed = 0
    while True:
        try:
            cc_call(account=account, method="GET", path="/contact_lists", lane=task["lane"])
            answered += 1
        except QuotaExhausted:
            return {"answered": answered, "failed": failed}
        except CCError:
            failed += 1


def pid_after(seconds: float) -> int:
    """Sleep, then name this worker: lets the parent wait until every worker is up."""
    import os

    time.sleep(seconds)
    return os.getpid()

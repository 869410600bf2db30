"""Work the token tests hand to real OS processes (see tests.support_procs)."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

from tests.support_procs import slots_booked


def tokens_from_threads(task: dict[str, Any]) -> list[str]:
    """``threads`` threads of this process ask for the account's token at ``start``."""
    from django.db import connection

    from integrations.models import ConnectedAccount
    from integrations.services.tokens import access_token

    results: list[str] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            account = ConnectedAccount.objects.select_related("api_key").get(pk=task["account_id"])
            delay = task["start"] - time.time()
            if delay > 0:
                time.sleep(delay)
            results.append(access_token(account=account))
        except BaseException as exc:  # reported to the parent, which fails the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=one) for _ in range(task["threads"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} thread(s) failed: {errors[0]!r}")
    return results


def refresh_accounts(task: dict[str, Any]) -> dict[str, list]:
    """Ask for the token of each account in ``account_ids`` (each falls due), as a caller that
    is told to come back later (``TokenRefreshFailed``) does: after the account's backoff.
    Returns the tokens got and the token-endpoint slots this process booked (epoch seconds on
    the ledger's clock)."""
    from django.utils import timezone

    from integrations.models import ConnectedAccount
    from integrations.services import tokens

    out = []
    # A refresh looks token_slot_reserve up each time.
    with slots_booked(tokens, "token_slot_reserve") as booked:
        delay = task["start"] - time.time()
        if delay > 0:
            time.sleep(delay)
        for account in ConnectedAccount.objects.select_related("api_key").filter(
            pk__in=task["account_ids"]
        ):
            for attempt in range(6):
                try:
                    out.append((account.pk, tokens.access_token(account=account)))
                    break
                except tokens.TokenRefreshFailed:
                    if attempt == 5:
                        raise
                    account.refresh_from_db()
                    until = account.refresh_backoff_until or timezone.now()
                    time.sleep(max(0.0, (until - timezone.now()).total_seconds()) + 0.05)
    return {"tokens": out, "slots": booked}


def refresh_then_die_before_storing(task: dict[str, Any]) -> None:
    """Take the lease, let CC answer the refresh, then die by SIGKILL before storing: the crash
    between CC rotating a token and our commit."""
    from integrations.models import ConnectedAccount
    from integrations.services import tokens

    def killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    tokens._store_refreshed = killed
    account = ConnectedAccount.objects.select_related("api_key").get(pk=task["account_id"])
    tokens.access_token(account=account)


def die_mid_refresh(database_name: str, overrides: dict[str, Any], account_id: int) -> None:
    """Process entry point: set Django up, then crash mid-refresh (see above)."""
    from tests.support_procs import _init

    _init(database_name, overrides)
    refresh_then_die_before_storing({"account_id": account_id})

"""An account's contact lists as CC reports them, fetched through the gateway."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.core.cache import cache
from django.utils import timezone

from integrations.models import ConnectedAccount
from integrations.services import gateway

#: Page views within this many seconds reuse one answer instead of spending the key's budget.
LISTS_CACHE_SECONDS = 60


@dataclass(frozen=True)
class ContactListsSnapshot:
    """CC's lists of an account with their membership counts, and when CC gave them."""

    lists: list[dict]
    fetched_at: dt.datetime


def account_contact_lists_snapshot(
    *, account: ConnectedAccount, fresh: bool = False
) -> ContactListsSnapshot:
    """The account's CC lists with membership counts and the time CC reported them.

    Answers from a minute-long cache unless ``fresh``. A read is ``GET /contact_lists``
    through the gateway (one call per page of 1,000 lists) and replaces the cached answer, so
    the pages that follow show the same counts and the same time.
    """
    cache_key = f"ccportal:lists:{account.pk}:{account.token_version}"
    snapshot = None if fresh else cache.get(cache_key)
    if not isinstance(snapshot, ContactListsSnapshot):
        lists = gateway.cc_client(account=account).contact_lists()
        snapshot = ContactListsSnapshot(lists=lists, fetched_at=timezone.now())
        cache.set(cache_key, snapshot, timeout=LISTS_CACHE_SECONDS)
    return snapshot


def account_contact_lists(*, account: ConnectedAccount, fresh: bool = False) -> list[dict]:
    """The account's CC lists with membership counts; cached for a minute unless ``fresh``."""
    return account_contact_lists_snapshot(account=account, fresh=fresh).lists


def account_contact_list(*, account: ConnectedAccount, list_id: str) -> dict | None:
    """One of the account's lists (from the same cached answer), or None when CC has no such
    list."""
    return next(
        (item for item in account_contact_lists(account=account) if item.get("list_id") == list_id),
        None,
    )

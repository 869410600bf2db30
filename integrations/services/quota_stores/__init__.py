"""Where the quota service keeps each key's shared ledger.

``CC_QUOTA_STORE`` names the store by dotted path: :class:`DatabaseStore` (the default; a row
per key in SQLite or PostgreSQL) or :class:`RedisStore` (the default when ``REDIS_URL`` is set).
:class:`QuotaStore` documents the contract both fulfil; :mod:`.rules` holds the decisions.
"""

from __future__ import annotations

from integrations.services.quota_stores.base import QuotaError, QuotaStore, QuotaStoreUnavailable
from integrations.services.quota_stores.database import DatabaseStore
from integrations.services.quota_stores.redis import RedisStore
from integrations.services.quota_stores.rules import Booking, KeyQuota, Ledger, Outcome

__all__ = [
    "Booking",
    "DatabaseStore",
    "KeyQuota",
    "Ledger",
    "Outcome",
    "QuotaError",
    "QuotaStore",
    "QuotaStoreUnavailable",
    "RedisStore",
]

"""ccportal's data model, one module per subject.

* :mod:`.keys` — :class:`ApiKey`, a Constant Contact application (client_id) and its rate-limit
  tier.
* :mod:`.accounts` — :class:`ConnectedAccount`, a CC account connected through a key, with its
  tokens and health.
* :mod:`.usage` — :class:`KeyLimiterState` and :class:`AccountLimiterState`, the shared ledger the
  quota service books calls against (per key, and each account's share of it); :class:`ApiCall` / :class:`DailyUsage` / :class:`HourlyUsage`, every attempt and its
  rollups per key and day and per key, account and hour.
* :mod:`.jobs` — :class:`BulkJob`, a resumable list-membership sync.
* :mod:`.proxy` — :class:`ProxyToken`, a revocable portal token an application calls CC
  through the proxy with.
* :mod:`.worker` — :class:`WorkerHeartbeat`, when each worker last took a task.
* :mod:`.alerts` — :class:`AlertDestination`, :class:`AlertEvent`, :class:`AlertDelivery`:
  where alerts go, what happened, and each attempt to tell someone.

Models answer questions about themselves; rules live in ``integrations.services``. Import them
from here: ``from integrations.models import ApiKey``.
"""

from integrations.models.accounts import AccountHealth, AccountStatus, ConnectedAccount, RefreshMode
from integrations.models.alerts import (
    AlertDelivery,
    AlertDestination,
    AlertEvent,
    AlertEventType,
    AlertKind,
    DeliveryState,
)
from integrations.models.jobs import BulkJob, JobPhase, JobState, SyncMode, SyncStrategy
from integrations.models.keys import ApiKey, Tier
from integrations.models.proxy import PROXY_TOKEN_PREFIX, ProxyToken
from integrations.models.usage import (
    AccountLimiterState,
    ApiCall,
    CallKind,
    DailyUsage,
    HourlyUsage,
    KeyLimiterState,
    Lane,
)
from integrations.models.worker import WorkerHeartbeat

__all__ = [
    "PROXY_TOKEN_PREFIX",
    "AccountHealth",
    "AccountLimiterState",
    "AccountStatus",
    "AlertDelivery",
    "AlertDestination",
    "AlertEvent",
    "AlertEventType",
    "AlertKind",
    "ApiCall",
    "ApiKey",
    "BulkJob",
    "CallKind",
    "ConnectedAccount",
    "DailyUsage",
    "DeliveryState",
    "HourlyUsage",
    "JobPhase",
    "JobState",
    "KeyLimiterState",
    "Lane",
    "ProxyToken",
    "RefreshMode",
    "SyncMode",
    "SyncStrategy",
    "Tier",
    "WorkerHeartbeat",
]

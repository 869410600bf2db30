"""One quota test suite, run against every store that can run here.

A test module declares ``@pytest.fixture(params=STORES) def store(request, settings)`` returning
:func:`store_under_test`:

* ``sqlite`` — DatabaseStore on the file-backed SQLite test database (the default pass);
* ``postgresql`` — DatabaseStore on PostgreSQL, when the test database is PostgreSQL
  (CI's second pass, ``DATABASE_URL=postgres://...``);
* ``redis`` — RedisStore on ``REDIS_URL`` (or 127.0.0.1:6379/15), each test under its own key
  prefix, removed afterwards; skipped when Redis does not answer.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from django.db import connection

from integrations.models import ApiKey, Tier
from integrations.services.quota import quota_store
from integrations.services.quota_stores import QuotaStore
from tests.factories import ApiKeyFactory

DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/15"
STORES = ["sqlite", "postgresql", "redis"]


@dataclass
class StoreUnderTest:
    name: str
    store: QuotaStore
    settings: dict[str, Any] = field(default_factory=dict)  # what every process must set


def store_under_test(request: pytest.FixtureRequest, settings: Any) -> StoreUnderTest:
    """Select the store ``request.param`` names for this test (skipping if it cannot run)."""
    name = request.param
    if name == "redis":
        url = os.environ.get("REDIS_URL") or DEFAULT_TEST_REDIS_URL
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=2)
        try:
            client.ping()
        except redis.RedisError as exc:
            pytest.skip(f"Redis at {url} does not answer ({exc}): the RedisStore variant needs it")
        prefix = f"ccportal-test:{uuid.uuid4().hex}:"
        overrides = {
            "CC_QUOTA_STORE": "integrations.services.quota_stores.RedisStore",
            "REDIS_URL": url,
            "CC_QUOTA_REDIS_PREFIX": prefix,
        }

        def forget_keys() -> None:
            for key in client.scan_iter(f"{prefix}*"):
                client.delete(key)
            client.close()

        request.addfinalizer(forget_keys)
    else:
        if connection.vendor != name:
            pytest.skip(
                f"the test database is {connection.vendor}: the {name} DatabaseStore variant "
                f"runs when DATABASE_URL points at {name}"
            )
        overrides = {"CC_QUOTA_STORE": "integrations.services.quota_stores.DatabaseStore"}
    for setting, value in overrides.items():
        setattr(settings, setting, value)
    return StoreUnderTest(name=name, store=quota_store(), settings=overrides)


def custom_key(*, per_second: int, per_day: int) -> ApiKey:
    return ApiKeyFactory(tier=Tier.CUSTOM, custom_per_second=per_second, custom_per_day=per_day)

"""The cache keeps working, and keeps limiting, while Redis does not answer."""

from __future__ import annotations

import os
import socket

import pytest
import redis
from django.core.cache import caches
from django.test import override_settings

from ccportal.cache import FailoverCache, cache_outage, url_without_password
from tests.integrations.services.quota_support.stores import DEFAULT_TEST_REDIS_URL

pytestmark = pytest.mark.django_db


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the probe is closed


def _caches(redis_url: str) -> dict:
    return {
        "default": {
            "BACKEND": "ccportal.cache.FailoverCache",
            "OPTIONS": {"PRIMARY": "redis", "FALLBACK": "database"},
        },
        "redis": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        },
        "database": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "ccportal_cache",
        },
    }


@pytest.fixture
def redis_down():
    url = f"redis://portal:s3cr3t-pw@127.0.0.1:{_closed_port()}/0"
    with override_settings(CACHES=_caches(url)):
        yield caches["default"]


def test_with_redis_down_every_operation_answers_from_the_database(redis_down):
    assert isinstance(redis_down, FailoverCache)
    assert redis_down.add("attempts", 0, 60) is True
    assert redis_down.incr("attempts") == 1
    assert redis_down.incr("attempts") == 2
    redis_down.set_many({"a": 1, "b": 2})
    assert redis_down.get_many(["a", "b"]) == {"a": 1, "b": 2}
    # The counter lives in the database cache: it counts on across requests.
    assert caches["database"].get("attempts") == 2


def test_the_outage_is_named_without_the_password(redis_down):
    assert cache_outage() is not None
    problem = cache_outage()
    assert "Redis" in problem and "s3cr3t-pw" not in problem
    assert "portal:***@127.0.0.1" in problem


def test_rate_limit_counting_goes_on_while_redis_is_down(redis_down, rf):
    from django_ratelimit.core import is_ratelimited

    request = rf.post("/login/", REMOTE_ADDR="203.0.113.9")
    results = [
        is_ratelimited(request, group="t", key="ip", rate="3/m", increment=True) for _ in range(5)
    ]
    assert results == [False, False, False, True, True]


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("REDIS_URL") or DEFAULT_TEST_REDIS_URL
    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis at {url} does not answer ({exc})")
    return url


def test_with_redis_up_the_primary_answers_and_no_outage_is_shown(redis_url):
    with override_settings(CACHES=_caches(redis_url)):
        cache = caches["default"]
        cache.set("ccportal-test-key", "v", 30)
        assert caches["redis"].get("ccportal-test-key") == "v"
        assert caches["database"].get("ccportal-test-key") is None
        assert cache_outage() is None
        cache.delete("ccportal-test-key")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:pw@host/1", "redis://user:***@host/1"),
        ("redis://host:6379", "redis://host:6379"),
        ("postgres://u:p%40ss@db:5432/x", "postgres://u:***@db:5432/x"),
    ],
)
def test_url_without_password(url, shown):
    assert url_without_password(url) == shown

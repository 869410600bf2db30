"""A cache that keeps working while Redis does not answer.

``FailoverCache`` sends every operation to its primary cache (Redis) and, when the primary
raises a connection error or times out, to its fallback (the database cache) instead. After a
failure the primary is left alone for :attr:`FailoverCache.retry_after` seconds, so a page does
not wait on a dead Redis at every cache call; then the next operation tries it again.

What the cache holds is either disposable (the lists a page shows for a minute) or a counter
that must keep counting (the login and Connect rate limits). On the fallback the counters
start again from zero — a short window of generosity, never a limiter that stops limiting,
which is what an exception from the cache would otherwise become (django-ratelimit lets a
request through, or the page answers 500).

:func:`cache_outage` tells the pages whether the process is on the fallback now, for the
banner that names the outage.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.core.cache import caches
from django.core.cache.backends.base import BaseCache

logger = logging.getLogger(__name__)

try:  # redis is a dependency of the Redis cache, not of the portal
    from redis.exceptions import RedisError
except ImportError:  # pragma: no cover
    RedisError = OSError  # type: ignore[assignment,misc]

#: What a primary that is down raises (connection refused, reset, timeout, DNS).
PRIMARY_DOWN = (RedisError, OSError)


def url_without_password(url: str) -> str:
    """``url`` with any password in it replaced by ``***`` (for messages and pages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


class FailoverCache(BaseCache):
    retry_after = 5.0

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        super().__init__(params)
        options = params.get("OPTIONS", {})
        self._primary_alias = options["PRIMARY"]
        self._fallback_alias = options["FALLBACK"]
        self._lock = threading.Lock()
        #: monotonic time until which the primary is skipped; 0 while it answers.
        self._down_until = 0.0
        self._problem = ""

    # --- which cache answers ------------------------------------------------------------------
    @property
    def primary(self) -> BaseCache:
        return caches[self._primary_alias]

    @property
    def fallback(self) -> BaseCache:
        return caches[self._fallback_alias]

    def outage(self) -> str | None:
        """Why the fallback answers now, or None while the primary does."""
        if self._down_until and time.monotonic() < self._down_until + self.retry_after:
            return self._problem
        return None

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if time.monotonic() >= self._down_until:
            try:
                result = getattr(self.primary, name)(*args, **kwargs)
            except PRIMARY_DOWN as exc:
                self._primary_failed(exc)
            else:
                if self._down_until:
                    self._primary_back()
                return result
        return getattr(self.fallback, name)(*args, **kwargs)

    def _primary_failed(self, exc: BaseException) -> None:
        servers = getattr(self.primary, "_servers", None) or [""]
        location = url_without_password(str(servers[0]))
        with self._lock:
            first = not self._down_until
            self._down_until = time.monotonic() + self.retry_after
            self._problem = (
                f"Redis ({location or self._primary_alias}) is not answering ({type(exc).__name__})"
            )
        if first:
            logger.warning("%s: the cache runs on the database until it is back.", self._problem)

    def _primary_back(self) -> None:
        with self._lock:
            self._down_until = 0.0
            self._problem = ""
        logger.warning("Redis answers again: the cache is back on Redis.")

    # --- the cache API ------------------------------------------------------------------------
    def add(self, key, value, timeout=None, version=None):
        return self._call("add", key, value, timeout=timeout, version=version)

    def get(self, key, default=None, version=None):
        return self._call("get", key, default=default, version=version)

    def set(self, key, value, timeout=None, version=None):
        return self._call("set", key, value, timeout=timeout, version=version)

    def touch(self, key, timeout=None, version=None):
        return self._call("touch", key, timeout=timeout, version=version)

    def delete(self, key, version=None):
        return self._call("delete", key, version=version)

    def get_many(self, keys, version=None):
        return self._call("get_many", keys, version=version)

    def set_many(self, data, timeout=None, version=None):
        return self._call("set_many", data, timeout=timeout, version=version)

    def delete_many(self, keys, version=None):
        return self._call("delete_many", keys, version=version)

    def has_key(self, key, version=None):
        return self._call("has_key", key, version=version)

    def incr(self, key, delta=1, version=None):
        return self._call("incr", key, delta=delta, version=version)

    def decr(self, key, delta=1, version=None):
        return self._call("decr", key, delta=delta, version=version)

    def clear(self):
        return self._call("clear")

    def close(self, **kwargs):
        for cache in (self.primary, self.fallback):
            with contextlib.suppress(PRIMARY_DOWN):
                cache.close(**kwargs)


def cache_outage() -> str | None:
    """Why the default cache runs on its fallback now, or None.

    Asks the cache first (one cheap lookup: Redis while it answers, the database while the
    process knows Redis is down), so the answer is current even on a page that used no cache.
    """
    cache = caches["default"]
    if not isinstance(cache, FailoverCache):
        return None
    cache.has_key("ccportal:health")
    return cache.outage()

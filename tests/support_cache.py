"""The Redis cache of the test settings: ``clear()`` forgets this run's keys only.

Django's ``RedisCache.clear()`` flushes the whole Redis database, which would wipe the keys of
every other worker of a parallel run (their login counters, Connect limits, cached lists).
"""

from __future__ import annotations

from django.core.cache.backends.redis import RedisCache


class ScopedRedisCache(RedisCache):
    def clear(self) -> bool:
        client = self._cache.get_client(None, write=True)
        keys = list(client.scan_iter(match=f"{self.key_prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        return True

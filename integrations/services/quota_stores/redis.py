"""The ledger as one Redis hash per key, changed only by Lua scripts (one atomic step each)."""

from __future__ import annotations

from typing import Any

import redis
from django.core.exceptions import ImproperlyConfigured
from redis.backoff import NoBackoff
from redis.retry import Retry

from integrations import conf
from integrations.services.quota_stores import rules
from integrations.services.quota_stores.base import QuotaStore, QuotaStoreUnavailable
from integrations.services.quota_stores.rules import Booking, KeyQuota, Ledger, Outcome

# Shared by every script. ARGV[1] is the time to decide at, '' for the Redis clock: TIME is one
# clock for every process and host using this Redis. Field order matches rules.Ledger.
_PRELUDE = """
local key = KEYS[1]
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[1])
end
local DAY = 86400
local FIELDS = {'next_slot_at', 'day', 'day_count', 'next_day_count', 'paused_until',
                'margin', 'margin_widened_at', 'stopped_until', 'token_next_slot_at',
                'background_line_at'}
local L = {}
local raw = redis.call('HMGET', key, unpack(FIELDS))
for i, name in ipairs(FIELDS) do L[name] = tonumber(raw[i]) or 0 end

local function num(x) return string.format('%.17g', x) end
local function day_number(t) return math.floor(t / DAY) end
local function roll(day)
  if day <= L.day then return end
  if day == L.day + 1 then L.day_count = L.next_day_count else L.day_count = 0 end
  L.next_day_count = 0
  L.day = day
end
local function save()
  local args = {}
  for _, name in ipairs(FIELDS) do
    args[#args + 1] = name
    args[#args + 1] = num(L[name])
  end
  redis.call('HSET', key, unpack(args))
end
"""

# rules.book_call. ARGV: now, per_second, budget, background (1/0), horizon, day_guard, margin.
_RESERVE = (
    _PRELUDE
    + """
local per_second, budget = tonumber(ARGV[2]), tonumber(ARGV[3])
local background, horizon = ARGV[4] == '1', tonumber(ARGV[5])
local guard, floor_margin = tonumber(ARGV[6]), tonumber(ARGV[7])
local spacing = (1.0 + math.max(L.margin, floor_margin)) / per_second
local slot = math.max(now, L.next_slot_at, L.paused_until)
local first_day = math.max(day_number(slot - guard), L.day)
local last_day = math.max(day_number(slot + guard), first_day)
roll(first_day)
if slot < L.stopped_until then
  return {'stopped', num(now), num(L.stopped_until), num(first_day), num(L.day_count)}
end
if L.day_count >= budget then
  return {'exhausted', num(now), num((first_day + 1) * DAY + guard), num(first_day),
          num(L.day_count)}
end
local straddles = last_day > first_day
if straddles and L.next_day_count >= budget then
  return {'exhausted', num(now), num((last_day + 1) * DAY + guard), num(last_day),
          num(L.next_day_count)}
end
if background and slot > now + horizon then
  local turn = math.max(slot - horizon, L.background_line_at)
  L.background_line_at = turn + spacing
  save()
  return {'deferred', num(now), num(turn), '0', '0'}
end
L.next_slot_at = slot + spacing
L.day_count = L.day_count + 1
if straddles then L.next_day_count = L.next_day_count + 1 end
save()
return {'granted', num(now), num(slot), num(first_day), num(L.day_count)}
"""
)

# rules.book_token_slot. ARGV: now, token_spacing.
_TOKEN_SLOT = (
    _PRELUDE
    + """
local slot = math.max(now, L.token_next_slot_at)
L.token_next_slot_at = slot + tonumber(ARGV[2])
save()
return {'granted', num(now), num(slot), '0', '0'}
"""
)

# rules.pause. ARGV: now, seconds.
_PAUSE = (
    _PRELUDE
    + """
L.paused_until = math.max(L.paused_until, now + tonumber(ARGV[2]))
save()
return num(L.paused_until)
"""
)

# rules.widen_margin. ARGV: now, factor, step, maximum, margin, cooldown.
_WIDEN = (
    _PRELUDE
    + """
local factor, step, maximum = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local current = math.max(L.margin, tonumber(ARGV[5]))
if now < L.margin_widened_at + tonumber(ARGV[6]) then return num(current) end
local widened = math.max(current, math.min(maximum, current * factor + step))
if widened ~= L.margin then
  L.margin = widened
  L.margin_widened_at = now
  save()
end
return num(widened)
"""
)

# rules.stop_day. ARGV: now, day_guard.
_STOP_DAY = (
    _PRELUDE
    + """
local guard = tonumber(ARGV[2])
local reopens = (day_number(now - guard) + 1) * DAY + guard
L.stopped_until = math.max(L.stopped_until, reopens)
save()
return num(L.stopped_until)
"""
)

# rules.resume. ARGV: now.
_RESUME = (
    _PRELUDE
    + """
L.stopped_until = 0
save()
return 1
"""
)

# rules.current_view, read-only. ARGV: now, day_guard.
_READ = (
    _PRELUDE
    + """
roll(day_number(now - tonumber(ARGV[2])))
local out = {num(now)}
for _, name in ipairs(FIELDS) do out[#out + 1] = num(L[name]) end
return out
"""
)


class RedisStore(QuotaStore):
    """Each step is one Lua script on the key's hash (``<prefix><client_id>``).

    Redis runs a script to completion before any other command, so the read, the rules and the
    write are one atomic step; the time is Redis's ``TIME``. The ledger is keyed by client_id,
    so every deployment sharing this Redis and a key shares its ledger. Configure Redis
    persistence (AOF): a Redis that restarts empty forgets today's count.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        prefix: str | None = None,
        timeout: float | None = None,
    ) -> None:
        url = conf.redis_url() if url is None else url
        if not url:
            raise ImproperlyConfigured(
                "CC_QUOTA_STORE names the Redis quota store but REDIS_URL is empty: set "
                "REDIS_URL, or use integrations.services.quota_stores.DatabaseStore."
            )
        self.prefix = conf.quota_redis_prefix() if prefix is None else prefix
        timeout = conf.quota_store_timeout() if timeout is None else timeout
        # One immediate retry survives a pooled connection that went stale; more would only
        # hold the caller while the store is down.
        self.client = redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
            decode_responses=True,
        )
        self._scripts = {
            name: self.client.register_script(source)
            for name, source in {
                "reserve": _RESERVE,
                "token_slot": _TOKEN_SLOT,
                "pause": _PAUSE,
                "widen": _WIDEN,
                "stop_day": _STOP_DAY,
                "resume": _RESUME,
                "read": _READ,
            }.items()
        }

    def key(self, quota: KeyQuota) -> str:
        return f"{self.prefix}{quota.client_id}"

    def reserve(self, quota: KeyQuota, *, background: bool, now: float | None = None) -> Booking:
        answer = self._run(
            "reserve",
            quota,
            now,
            quota.per_second,
            quota.budget(background=background),
            int(background),
            quota.horizon,
            quota.day_guard,
            quota.margin,
        )
        return _booking(answer)

    def reserve_token_slot(self, quota: KeyQuota, *, now: float | None = None) -> Booking:
        return _booking(self._run("token_slot", quota, now, quota.token_spacing))

    def pause(self, quota: KeyQuota, *, seconds: float, now: float | None = None) -> float:
        return float(self._run("pause", quota, now, seconds))

    def widen_margin(
        self,
        quota: KeyQuota,
        *,
        factor: float,
        step: float,
        maximum: float,
        now: float | None = None,
    ) -> float:
        return float(
            self._run(
                "widen",
                quota,
                now,
                factor,
                step,
                maximum,
                quota.margin,
                rules.WIDEN_COOLDOWN_SECONDS,
            )
        )

    def stop_day(self, quota: KeyQuota, *, now: float | None = None) -> float:
        return float(self._run("stop_day", quota, now, quota.day_guard))

    def resume(self, quota: KeyQuota, *, now: float | None = None) -> None:
        self._run("resume", quota, now)

    def read(self, quota: KeyQuota, *, now: float | None = None) -> tuple[Ledger, float]:
        clock, *fields = self._run("read", quota, now, quota.day_guard)
        values = [float(value) for value in fields]
        ledger = Ledger(
            next_slot_at=values[0],
            day=int(values[1]),
            day_count=int(values[2]),
            next_day_count=int(values[3]),
            paused_until=values[4],
            margin=values[5],
            margin_widened_at=values[6],
            stopped_until=values[7],
            token_next_slot_at=values[8],
            background_line_at=values[9],
        )
        return ledger, float(clock)

    def problem(self) -> str | None:
        try:
            self.client.ping()
        except redis.RedisError as exc:
            return (
                f"The quota ledger in Redis at {self._where()} is unavailable "
                f"({type(exc).__name__})."
            )
        return None

    def _run(self, script: str, quota: KeyQuota, now: float | None, *args: Any) -> Any:
        argv = ["" if now is None else repr(float(now)), *(_arg(a) for a in args)]
        try:
            return self._scripts[script](keys=[self.key(quota)], args=argv)
        except redis.RedisError as exc:
            raise QuotaStoreUnavailable(
                f"The quota ledger in Redis at {self._where()} is unavailable "
                f"({type(exc).__name__}: {exc}); no call was booked, so none may be sent."
            ) from exc

    def _where(self) -> str:
        options = self.client.connection_pool.connection_kwargs
        if "path" in options:
            return f"unix:{options['path']} db {options.get('db', 0)}"
        return f"{options.get('host')}:{options.get('port')} db {options.get('db', 0)}"


def _arg(value: Any) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def _booking(answer: list[str]) -> Booking:
    outcome, now, at, day, day_count = answer
    return Booking(Outcome(outcome), float(now), float(at), int(float(day)), int(float(day_count)))

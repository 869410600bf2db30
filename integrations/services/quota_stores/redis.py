"""The ledger as one Redis hash per key, changed only by Lua scripts (one atomic step each)."""

from __future__ import annotations

import dataclasses
from typing import Any

import redis
from django.core.exceptions import ImproperlyConfigured
from redis.backoff import NoBackoff
from redis.retry import Retry

from integrations import conf
from integrations.services.quota_stores import rules
from integrations.services.quota_stores.base import QuotaStore, QuotaStoreUnavailable
from integrations.services.quota_stores.rules import (
    AccountLedger,
    AccountShare,
    Booking,
    KeyQuota,
    Ledger,
    Outcome,
)

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

# rules.book_call. KEYS: the key's hash, its accounts' hash and the sorted set of its flows by
# active_until. A flow is named by its account (the portal's own calls) or
# ``<account>/<token>``; in the accounts' hash, field <flow> holds the AccountLedger fields in
# order, space-separated, <flow>:w the weight alone (for summing) and <account>:t the account's
# tokens with a flow, space-separated. ARGV: now, per_second, budget, background (1/0), horizon,
# day_guard, margin, account ('' for none), weight, cap ('' for none), ticket ('' for none),
# fair (1/0), tolerance, token (0 for none), max_wait ('' for none).
_RESERVE = (
    _PRELUDE
    + """
local per_second, budget = tonumber(ARGV[2]), tonumber(ARGV[3])
local background, horizon = ARGV[4] == '1', tonumber(ARGV[5])
local guard, floor_margin = tonumber(ARGV[6]), tonumber(ARGV[7])
local account, weight = ARGV[8], tonumber(ARGV[9])
local cap, ticket, fair = tonumber(ARGV[10]), tonumber(ARGV[11]), ARGV[12] == '1'
local tolerance, token = tonumber(ARGV[13]), ARGV[14]
local max_wait = tonumber(ARGV[15])
local accounts, lines = KEYS[2], KEYS[3]
local spacing = (1.0 + math.max(L.margin, floor_margin)) / per_second
local slot = math.max(now, L.next_slot_at, L.paused_until)
local first_day = math.max(day_number(slot - guard), L.day)
local last_day = math.max(day_number(slot + guard), first_day)
roll(first_day)
if slot < L.stopped_until then
  return {'stopped', num(now), num(L.stopped_until), num(first_day), num(L.day_count), ''}
end
if L.day_count >= budget then
  return {'exhausted', num(now), num((first_day + 1) * DAY + guard), num(first_day),
          num(L.day_count), ''}
end
local straddles = last_day > first_day
if straddles and L.next_day_count >= budget then
  return {'exhausted', num(now), num((last_day + 1) * DAY + guard), num(last_day),
          num(L.next_day_count), ''}
end
local ACCOUNT = {'active_until', 'anchor_at', 'anchor_turn', 'rate', 'next_turn', 'weight',
                 'day', 'day_count'}
local function flow_of(t)
  if t == '0' then return account end
  return account .. '/' .. t
end
local function parse(raw)
  local F = {}
  for _, name in ipairs(ACCOUNT) do F[name] = 0 end
  if raw then
    local i = 1
    for value in string.gmatch(raw, '%S+') do F[ACCOUNT[i]] = tonumber(value); i = i + 1 end
  end
  return F
end
local A, flow, tokens, sib_count, sib_active = nil, nil, nil, 0, 0
if account ~= '' then
  flow = flow_of(token)
  local raw = redis.call('HGET', accounts, flow)
  A = parse(raw)
  if first_day > A.day then A.day = first_day; A.day_count = 0 end
  tokens = redis.call('HGET', accounts, account .. ':t') or ''
  local listed = token == '0'
  for t in string.gmatch('0 ' .. tokens, '%S+') do
    if t == token then
      listed = true
    else
      local S = parse(redis.call('HGET', accounts, flow_of(t)))
      if S.day >= first_day then sib_count = sib_count + S.day_count end
      if S.active_until > now then sib_active = sib_active + 1 end
    end
  end
  if not listed then tokens = tokens .. ' ' .. token end
  if cap and A.day_count + sib_count >= cap then
    return {'capped', num(now), num((first_day + 1) * DAY + guard), num(first_day),
            num(A.day_count + sib_count), ''}
  end
end
local function save_account()
  A.weight = weight
  local values = {}
  for _, name in ipairs(ACCOUNT) do values[#values + 1] = num(A[name]) end
  redis.call('HSET', accounts, flow, table.concat(values, ' '), flow .. ':w', num(weight),
             account .. ':t', tokens)
  redis.call('ZADD', lines, num(A.active_until), flow)
end
local function take_slot()
  L.next_slot_at = slot + spacing
  L.day_count = L.day_count + 1
  if straddles then L.next_day_count = L.next_day_count + 1 end
  save()
end
-- The other accounts active on the key, each once, at the weight of its heaviest active flow.
local function others_weight()
  redis.call('ZREMRANGEBYSCORE', lines, '-inf', num(now))
  local heaviest = {}
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', lines, '(' .. num(now), '+inf')) do
    local owner = string.match(id, '^[^/]+')
    if owner ~= account then
      local w = tonumber(redis.call('HGET', accounts, id .. ':w')) or 1
      heaviest[owner] = math.max(heaviest[owner] or 0, w)
    end
  end
  local others = 0
  for _, w in pairs(heaviest) do others = others + w end
  return others
end
if not background and max_wait and A and fair then
  local clock = A.anchor_turn + math.max(0, now - A.anchor_at) * A.rate
  local rate = (weight / (1 + sib_active)) / (spacing * (weight + others_weight()))
  local reach = clock + max_wait * rate
  local next_turn = math.max(A.next_turn, clock)
  local turn_due = next_turn <= reach + tolerance or L.next_slot_at + spacing <= now
  if not turn_due or slot - now > max_wait then
    local at = slot
    if not turn_due then at = math.max(slot, now + (next_turn - clock) / rate) end
    local asking_until = now + math.max(1, math.ceil(at - now - max_wait)) + 1 / rate
    if asking_until > A.active_until + 1 / rate or rate ~= A.rate then
      A.anchor_at, A.anchor_turn, A.rate = now, clock, rate
      A.active_until = math.max(A.active_until, asking_until)
      save_account()
    end
    return {'busy', num(now), num(at), num(first_day), num(L.day_count), ''}
  end
  A.anchor_at, A.anchor_turn, A.rate = now, clock, rate
  A.next_turn = next_turn + 1
  A.active_until = math.max(now + (A.next_turn - clock) / rate, slot + 1 / rate, A.active_until)
  A.day_count = A.day_count + 1
  take_slot()
  save_account()
  return {'granted', num(now), num(slot), num(first_day), num(L.day_count), ''}
end
if not background and max_wait and slot - now > max_wait then
  return {'busy', num(now), num(slot), num(first_day), num(L.day_count), ''}
end
if background and A and fair then
  local clock = A.anchor_turn + math.max(0, now - A.anchor_at) * A.rate
  local rate = (weight / (1 + sib_active)) / (spacing * (weight + others_weight()))
  local reach = clock + horizon * rate
  local next_turn = math.max(A.next_turn, clock)
  local idle = L.next_slot_at + spacing <= now
  if not ticket then
    ticket = next_turn
    next_turn = next_turn + 1
  end
  A.anchor_at, A.anchor_turn, A.rate, A.next_turn = now, clock, rate, next_turn
  A.active_until = now + (next_turn - clock) / rate
  local turn
  if ticket > reach + tolerance and not idle then
    turn = math.max(now + (ticket - clock) / rate, slot) - horizon
  elseif slot > now + horizon + tolerance then
    turn = math.max(slot - horizon, L.background_line_at)
    L.background_line_at = turn + spacing
    save()
  else
    A.day_count = A.day_count + 1
    take_slot()
    save_account()
    return {'granted', num(now), num(slot), num(first_day), num(L.day_count), ''}
  end
  A.active_until = math.max(A.active_until, turn + 1 / rate)
  save_account()
  return {'deferred', num(now), num(turn), '0', '0', num(ticket)}
end
if background and slot > now + horizon then
  local turn = math.max(slot - horizon, L.background_line_at)
  L.background_line_at = turn + spacing
  save()
  return {'deferred', num(now), num(turn), '0', '0', ''}
end
take_slot()
if A then
  A.day_count = A.day_count + 1
  save_account()
end
return {'granted', num(now), num(slot), num(first_day), num(L.day_count), ''}
"""
)

# Every account's part, read-only: HGETALL of the accounts' hash.
_READ_ACCOUNTS = """
return redis.call('HGETALL', KEYS[1])
"""

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
                "read_accounts": _READ_ACCOUNTS,
            }.items()
        }

    def key(self, quota: KeyQuota) -> str:
        return f"{self.prefix}{quota.client_id}"

    def reserve(
        self,
        quota: KeyQuota,
        *,
        background: bool,
        now: float | None = None,
        share: AccountShare | None = None,
        max_wait: float | None = None,
    ) -> Booking:
        key = self.key(quota)
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
            share.account_id if share else "",
            float(share.weight) if share else 1.0,
            share.cap if share and share.cap is not None else "",
            share.ticket if share and share.ticket is not None else "",
            int(quota.fair_share),
            rules.TURN_TOLERANCE,
            share.token_id if share else 0,
            "" if max_wait is None else float(max_wait),
            keys=[key, f"{key}:accounts", f"{key}:lines"],
        )
        return _booking(answer)

    def read_accounts(
        self, quota: KeyQuota, *, now: float | None = None
    ) -> tuple[dict[int, AccountLedger], float]:
        ledger, at = self.read(quota, now=now)
        raw = self._run("read_accounts", quota, now, keys=[f"{self.key(quota)}:accounts"])
        day = max(ledger.day, rules.day_number(at - quota.day_guard))
        flows: dict[int, list[AccountLedger]] = {}
        for field, value in zip(raw[::2], raw[1::2], strict=True):
            if ":" in field:  # a weight or an account's list of tokens
                continue
            values = dict(zip(_ACCOUNT_FIELDS, (float(x) for x in value.split()), strict=True))
            values["day"], values["day_count"] = int(values["day"]), int(values["day_count"])
            account = int(field.partition("/")[0])
            flows.setdefault(account, []).append(AccountLedger(**values))
        return {account: rules.account_view(its, day) for account, its in flows.items()}, at

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

    def _run(
        self,
        script: str,
        quota: KeyQuota,
        now: float | None,
        *args: Any,
        keys: list[str] | None = None,
    ) -> Any:
        argv = ["" if now is None else repr(float(now)), *(_arg(a) for a in args)]
        try:
            return self._scripts[script](keys=keys or [self.key(quota)], args=argv)
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


_ACCOUNT_FIELDS = tuple(field.name for field in dataclasses.fields(AccountLedger))


def _booking(answer: list[str]) -> Booking:
    outcome, now, at, day, day_count, *rest = answer
    ticket = float(rest[0]) if rest and rest[0] else None
    return Booking(
        Outcome(outcome), float(now), float(at), int(float(day)), int(float(day_count)), ticket
    )

"""Work that quota tests hand to real OS processes (a ``spawn`` pool).

Each process sets Django up against the test database the parent uses (a file for SQLite, the
``test_*`` database for PostgreSQL) and calls the quota service exactly as the gateway would.
Every task first waits for a shared start time so the processes really race.
"""

from __future__ import annotations

import os
import time
from typing import Any


def init(database_name: str) -> None:
    """Pool initializer: Django against the parent's test database, connections warmed up."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ccportal.settings_test")
    import django
    from django.conf import settings

    django.setup()
    settings.DATABASES["default"]["NAME"] = database_name
    from django.db import connection

    connection.ensure_connection()
    from integrations.services import quota  # noqa: F401  (import cost paid before any race)


def _prepare(task: dict[str, Any]) -> Any:
    from django.test import override_settings

    from integrations.models import ApiKey

    # Each test brings its own store and policy; this process serves many tests in turn.
    override_settings(**task.get("settings", {})).enable()
    api_key = ApiKey.objects.get(pk=task["api_key_id"])
    delay = task["start_at"] - time.time()
    if delay > 0:
        time.sleep(delay)
    return api_key


def acquire_calls(task: dict[str, Any]) -> list[dict[str, Any]]:
    """``quota_acquire`` repeatedly (``count`` times or until ``until``); records each send and
    how many times the store was asked for it (``asks``: deferrals plus the granted booking)."""
    from integrations.models import ConnectedAccount
    from integrations.services import quota

    api_key = _prepare(task)
    lane = task.get("lane", "interactive")
    account = (
        ConnectedAccount.objects.get(pk=task["account_id"]) if task.get("account_id") else None
    )
    sends: list[dict[str, Any]] = []
    asks = 0
    reserve = quota.quota_reserve

    def counted_reserve(**kwargs: Any) -> Any:
        nonlocal asks
        asks += 1
        return reserve(**kwargs)

    quota.quota_reserve = counted_reserve  # quota_acquire looks it up on each ask
    try:
        while len(sends) < task.get("count", 10**9) and time.time() < task.get("until", 10**12):
            asked, asks = time.time(), 0
            try:
                reservation = quota.quota_acquire(api_key=api_key, lane=lane, account=account)
            except quota.AccountCapReached as capped:
                sends.append({"pid": os.getpid(), "capped": capped.cap, "message": str(capped)})
                break
            sent = time.time()  # where the gateway would send: right after the sleep
            sends.append(
                {
                    "pid": os.getpid(),
                    "account_id": account.pk if account else None,
                    "lane": lane,
                    "sent": sent,
                    "waited": sent - asked,
                    "slot": reservation.send_at,
                    "asks": asks,
                }
            )
    finally:
        quota.quota_reserve = reserve
    return sends


def reserve_calls(task: dict[str, Any]) -> list[dict[str, Any]]:
    """``quota_reserve`` ``count`` times without sleeping (each bounded by ``max_wait`` when the
    task has one); records each answer."""
    from integrations.services.quota import (
        QuotaBusy,
        QuotaDeferred,
        QuotaExhausted,
        quota_reserve,
    )

    api_key = _prepare(task)
    answers: list[dict[str, Any]] = []
    for _ in range(task["count"]):
        try:
            reservation = quota_reserve(
                api_key=api_key,
                lane=task.get("lane", "interactive"),
                max_wait=task.get("max_wait"),
            )
        except QuotaExhausted as exc:
            answers.append({"outcome": "exhausted", "message": str(exc)})
        except QuotaDeferred as exc:
            answers.append({"outcome": "deferred", "wait": exc.wait})
        except QuotaBusy as exc:
            answers.append({"outcome": "busy", "wait": exc.wait})
        else:
            answers.append(
                {
                    "outcome": "granted",
                    "slot": reservation.send_at,
                    "wait": reservation.wait,
                    "day_count": reservation.day_count,
                }
            )
    return answers


def proxied_calls(task: dict[str, Any]) -> list[dict[str, Any]]:
    """Bounded interactive bookings for ``account_id`` through portal token ``token`` until
    ``until``, as proxied callers make them. ``in_flight`` false: one caller, which waits for
    each slot before asking again; true: a flood that asks again at once, with as many calls
    in flight as the bound lets it have. A refused caller asks again after ``retry`` seconds
    (the flood's impatience) or the Retry-After it was told."""
    from integrations.models import ConnectedAccount
    from integrations.services.quota import QuotaBusy, quota_reserve

    api_key = _prepare(task)
    account = ConnectedAccount.objects.get(pk=task["account_id"])
    answers: list[dict[str, Any]] = []
    while time.time() < task["until"]:
        try:
            reservation = quota_reserve(
                api_key=api_key,
                account=account,
                proxy_token_id=task["token"],
                max_wait=task["max_wait"],
            )
        except QuotaBusy as busy:
            answers.append({"flow": task["token"], "outcome": "busy"})
            time.sleep(task.get("retry", busy.retry_after))
            continue
        answers.append({"flow": task["token"], "outcome": "granted", "slot": reservation.send_at})
        if not task["in_flight"]:
            time.sleep(max(0.0, reservation.send_at - time.time()))
    return answers


def reserve_token_slots(task: dict[str, Any]) -> list[float]:
    from integrations.services.quota import token_slot_reserve

    api_key = _prepare(task)
    return [token_slot_reserve(api_key=api_key).send_at for _ in range(task["count"])]


def control(task: dict[str, Any]) -> Any:
    """One control operation (``pause`` or ``widen``), as the gateway calls it after a 429."""
    from integrations.services.quota import quota_pause, quota_widen_margin

    api_key = _prepare(task)
    if task["op"] == "pause":
        return quota_pause(api_key=api_key, seconds=task["seconds"]).timestamp()
    if task["op"] == "widen":
        return quota_widen_margin(api_key=api_key)
    raise ValueError(task["op"])


def pid_after(seconds: float) -> int:
    """Which process answered, after ``seconds``: shows every process in a pool is ready."""
    time.sleep(seconds)
    return os.getpid()


def run(task: dict[str, Any]) -> Any:
    """Dispatch by ``task['work']`` so one pool serves every test."""
    return globals()[task["work"]](task)

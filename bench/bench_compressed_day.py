"""A key's day compressed into a few minutes, across 00:00 UTC: is the budget used, never passed?

    .venv/bin/python bench/bench_compressed_day.py [--before 75] [--after 75] [--processes 6]

A custom key allows 2,400 calls a day and 40 a second, in the portal and in the sandbox alike.
Background processes call ``GET /contact_lists`` through ``cc_call`` as a bulk job would:
flat out, parking when the background budget (the day minus the 5 % interactive reserve) is
spent until the store says bookings reopen, then carrying on. The run starts ``--before``
seconds before a UTC midnight and ends ``--after`` seconds after it, so two days' budgets are
drained with the midnight reset (and the day guard around it) in between.

What is simulated, and how: the run does not wait for a real midnight. The sandbox clock is
set to ``--before`` seconds before the next UTC midnight, and the portal's quota store (the
SQLite ``DatabaseStore``, whose clock is ``time.time()`` on SQLite) reads the same shifted
time in every process, so both sides agree on when the day turns, as CC and a portal with a
correct clock do. Nothing else is shifted (the call ledger's timestamps stay real). The
per-second limit is enforced by both on the real clock, unaffected.

Printed per UTC day: calls CC accepted, the share of the background budget used (target
>= 99 %), and CC's quota 429s (target 0), plus throttled 429s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from typing import Any

from benchenv import REPO, portal_environment, portal_ready

sys.path.insert(0, str(REPO))

CLIENT_ID = "bench-compressed-day"
REDIRECT_URI = "http://127.0.0.1:8000/accounts/callback/"
SECRET = "bench-secret"
PER_DAY = 2400
PER_SECOND = 40
SECONDS_PER_DAY = 86_400


class _ShiftedTime:
    """The ``time`` module, except that ``time()`` reads ``offset`` seconds ahead."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def time(self) -> float:
        return time.time() + self.offset

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


# --- inside the spawned processes -----------------------------------------------------------


def _init(offset: float) -> None:
    import django

    django.setup()
    from integrations.services.quota_stores import database

    database.time = _ShiftedTime(offset)


def _drain(job: dict[str, Any]) -> dict[str, Any]:
    """Background calls until ``end`` (shifted clock), parking whenever the budget is spent."""
    from integrations.constant_contact.errors import CCError
    from integrations.models import ConnectedAccount
    from integrations.services.gateway import cc_call
    from integrations.services.quota import QuotaExhausted

    offset = job["offset"]
    account = ConnectedAccount.objects.select_related("api_key").get(pk=job["account_id"])
    answered: list[float] = []
    errors: Counter[str] = Counter()
    parked = 0
    while time.time() + offset < job["end"]:
        try:
            cc_call(account=account, method="GET", path="/contact_lists", lane="background")
            answered.append(time.time() + offset)
        except QuotaExhausted as exhausted:
            parked += 1
            left = job["end"] - (time.time() + offset)
            time.sleep(max(0.0, min(exhausted.wait, left)))
        except CCError as exc:
            errors[exc.error_key or type(exc).__name__] += 1
    return {"answered": answered, "errors": dict(errors), "parked": parked}


# --- in this process ------------------------------------------------------------------------


def _connected_account(sandbox) -> int:
    from django.utils import timezone

    from integrations.models import AccountStatus, ConnectedAccount
    from integrations.services.keys import api_key_create

    sandbox.register_client(
        CLIENT_ID,
        redirect_uris=[REDIRECT_URI],
        client_secret=SECRET,
        tier="custom",
        per_second=PER_SECOND,
        per_day=PER_DAY,
        access_token_lifetime=SECONDS_PER_DAY,
    )
    api_key = api_key_create(
        name="Compressed day",
        client_id=CLIENT_ID,
        client_secret=SECRET,
        redirect_uri=REDIRECT_URI,
        tier="custom",
        per_second=PER_SECOND,
        per_day=PER_DAY,
    )
    owner = sandbox.create_account("day@example.com")
    sandbox.seed_list(owner, "Newsletter")
    tokens = sandbox.mint_tokens(CLIENT_ID, account=owner)
    return ConnectedAccount.objects.create(
        api_key=api_key,
        cc_user_id=owner.sub,
        label=owner.email,
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
        # Valid across the run on the real clock the token service uses.
        access_expires_at=timezone.now() + dt.timedelta(hours=1),
        scopes=tokens["scope"].split(),
        status=AccountStatus.ACTIVE,
        token_version=1,
    ).pk


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=float, default=75.0, help="seconds before midnight")
    parser.add_argument("--after", type=float, default=75.0, help="seconds after midnight")
    parser.add_argument("--processes", type=int, default=6)
    options = parser.parse_args()

    from integrations.sandbox.process import start_sandbox

    var_dir = tempfile.mkdtemp(prefix="ccportal-bench-day-")
    with start_sandbox(port=0) as sandbox_process:
        sandbox = sandbox_process.control
        portal_ready(portal_environment(var_dir, sandbox_url=sandbox_process.url))
        from integrations import conf
        from integrations.models import ApiKey
        from integrations.services.quota import key_quota

        account_id = _connected_account(sandbox)
        background_budget = key_quota(ApiKey.objects.get(client_id=CLIENT_ID)).background_per_day

        # Both clocks: --before seconds (plus the pool's start-up) ahead of the next midnight.
        lead = 3.0
        now = time.time()
        midnight = (int(now) // SECONDS_PER_DAY + 1) * SECONDS_PER_DAY
        start = midnight - options.before
        offset = start - (now + lead)
        sandbox.set_clock(dt.datetime.fromtimestamp(time.time() + offset, tz=dt.UTC))
        end = midnight + options.after
        print(
            f"Compressed day: custom key {PER_DAY:,}/day, {PER_SECOND}/s (portal and sandbox), "
            f"{options.processes} background processes, {os.cpu_count()} CPUs.\n"
            f"Simulated: sandbox clock and the portal's quota-store clock both run "
            f"{offset / 3600:+.2f} h shifted, from {dt.datetime.fromtimestamp(start, dt.UTC):%H:%M:%S} "
            f"to {dt.datetime.fromtimestamp(end, dt.UTC):%H:%M:%S} UTC across midnight; "
            f"day guard {conf.quota_day_guard():g} s, interactive reserve "
            f"{PER_DAY - background_budget} calls, background budget {background_budget:,}/day."
        )
        context = multiprocessing.get_context("spawn")
        began = time.monotonic()
        try:
            with context.Pool(options.processes, initializer=_init, initargs=(offset,)) as pool:
                job = {"account_id": account_id, "offset": offset, "end": end}
                results = pool.map(_drain, [job] * options.processes, chunksize=1)
        finally:
            shutil.rmtree(var_dir, ignore_errors=True)
        elapsed = time.monotonic() - began
        stats = sandbox.stats(CLIENT_ID)

    answered = sorted(t for r in results for t in r["answered"])
    by_day = Counter(int(t // SECONDS_PER_DAY) for t in answered)
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r["errors"])
    print(f"Real time elapsed {elapsed:.0f} s; {len(answered):,} calls answered.")
    for day, count in sorted(by_day.items()):
        date = dt.datetime.fromtimestamp(day * SECONDS_PER_DAY, dt.UTC).date()
        print(
            f"  {date}  {count:>5,} calls accepted, {count / background_budget:6.1%} of the "
            f"background budget (target >= 99%), {count / PER_DAY:6.1%} of CC's day"
        )
    guard = conf.quota_day_guard()
    near = sum(1 for t in answered if abs(t - midnight) < guard)
    print(f"  calls within the day guard (+/- {guard:g} s of midnight): {near}")
    print(
        f"  CC quota 429s: {stats.quota_exceeded} (target 0); throttled 429s: {stats.throttled}; "
        f"most accepted in 1 s: {stats.max_accepted_per_second} of {PER_SECOND}; "
        f"sandbox requests {stats.requests:,}"
    )
    if errors:
        print(f"  other errors: {dict(errors)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How long the quota service takes to decide, per store, with processes racing for one key.

    .venv/bin/python bench/bench_quota_overhead.py [--stores sqlite,postgres,redis]
                                                    [--processes 8] [--seconds 4]

Times ``quota_reserve`` — the one atomic step in the shared store plus the service around it —
never the sleep until the slot. All processes book on one key and sleep until their slots, as
gateway callers do, under these loads:

* ``standard 4/s`` and ``partner 10/s``: the utilisation benchmark's concurrency (eight
  processes saturating one CC key). The targets apply to these rows.
* ``fair 4/s``: the same on the background lane, each process booking for an account of its
  own on the key, so every booking runs the fair-share rules (the others' weights summed, the
  account's clock moved); deferred bookings come back at their turn with their ticket, and
  every ask is timed. The targets apply to this row too.
* stress, beyond anything CC allows, to show where each store's limits are:
  ``paced``: the key allows ``--paced-rate`` calls/s (default 1,000: a hundred times a partner
  key); ``flat out``: a million calls/s, so slots are always due at once and every process
  books back to back. With more processes than CPUs this also measures waiting for a CPU: by
  Little's law the mean is ``processes / throughput``.

Each store gets a fresh, throw-away home:

* ``sqlite``: a database file in a temporary directory, migrated first;
* ``postgres``: a temporary database on 127.0.0.1 (``--pg-url``), created and dropped;
* ``redis``: Redis db 14 on 127.0.0.1 (``--redis-url``), flushed before and after
  (the Django data — the API keys — lives in a temporary SQLite file).

A store that does not answer is skipped with a message.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from benchenv import django_setup, portal_environment

DATABASE_STORE = "integrations.services.quota_stores.DatabaseStore"
REDIS_STORE = "integrations.services.quota_stores.RedisStore"
FLAT_OUT_RATE = 1_000_000
PER_DAY = 2_000_000_000
WARM_UP_SECONDS = 5.0
# One booking in this many is replaced by a bare store round trip (the floor).
FLOOR_EVERY = 4
# Targets (ms): p50, p99.
TARGETS = {"sqlite": (2.0, 15.0), "postgres": (3.0, 20.0), "redis": (1.0, 5.0)}


@dataclass
class Result:
    store: str
    load: str
    samples: list[float]
    seconds: float
    stress: bool
    floor: list[float]

    def floor_percentile(self, share: float) -> float:
        ordered = sorted(self.floor)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000

    def percentile(self, share: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000


# --- inside the spawned processes -----------------------------------------------------------


def _prepare(env: dict[str, str], rates: list[int], accounts: int) -> list[tuple[int, list]]:
    """Migrate the fresh database and create one key per rate, with ``accounts`` accounts on
    each; returns ``(key id, [account ids])`` per rate."""
    django_setup(env)
    from django.core.management import call_command

    from integrations.models import ApiKey, ConnectedAccount, Tier

    call_command("migrate", verbosity=0, interactive=False)
    keys = []
    for n, rate in enumerate(rates):
        api_key = ApiKey.objects.create(
            name=f"Benchmark {rate}/s ({n})",
            client_id=f"bench-{os.getpid()}-{n}-{rate}",
            redirect_uri="http://127.0.0.1:8000/accounts/callback/",
            tier=Tier.CUSTOM,
            custom_per_second=rate,
            custom_per_day=PER_DAY,
        )
        ids = [
            ConnectedAccount.objects.create(api_key=api_key, label=f"account {i}").pk
            for i in range(accounts)
        ]
        keys.append((api_key.pk, ids))
    return keys


def _store_round_trip(store) -> None:
    """The cheapest request the store can answer: Redis PING, or ``SELECT 1``."""
    client = getattr(store, "client", None)
    if client is not None:
        client.ping()
        return
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _measure(
    job: tuple[dict[str, str], int, int | None, float, float],
) -> tuple[list[float], list[float]]:
    """Time ``quota_reserve`` after each wait for a slot; on every ``FLOOR_EVERY``-th booking,
    time a bare round trip to the store instead, after the same idle wait: the floor the machine
    sets (waking a process and the store's server up after a sleep) that no ledger can go under.

    The processes book from the start of the warm-up and only bookings made after ``start_at``
    are timed: started together, eight processes would all book in the same instant, and on a
    small machine the last would mostly be timing its wait for a CPU. Booking and sleeping until
    its slot spreads them out as the gateway's callers are, one spacing apart."""
    env, api_key_id, account_id, start_at, end_at = job
    django_setup(env)
    from integrations.models import ApiKey, ConnectedAccount
    from integrations.services.quota import QuotaDeferred, quota_reserve, quota_store, quota_wait

    api_key = ApiKey.objects.get(pk=api_key_id)
    account = ConnectedAccount.objects.get(pk=account_id) if account_id else None
    lane = "background" if account else "interactive"

    def reserve(*, record: bool):
        """Book as the gateway does (a deferred ask comes back at its turn with its ticket);
        with ``record``, every ask after ``start_at`` is one sample."""
        ticket = None
        while True:
            began = time.perf_counter()
            timed = record and time.time() >= start_at
            try:
                reservation = quota_reserve(
                    api_key=api_key, lane=lane, account=account, ticket=ticket
                )
            except QuotaDeferred as deferred:
                if timed:
                    samples.append(time.perf_counter() - began)
                ticket = deferred.ticket
                time.sleep(deferred.wait)
                continue
            if timed:
                samples.append(time.perf_counter() - began)
            return reservation

    store = quota_store()
    _store_round_trip(store)  # connection and imports warmed up
    samples: list[float] = []
    floor: list[float] = []
    turn = 0
    while time.time() < end_at:
        timed = time.time() >= start_at
        turn += 1
        started = time.perf_counter()
        if turn % FLOOR_EVERY:
            reservation = reserve(record=True)
        else:
            _store_round_trip(store)
            if timed:
                floor.append(time.perf_counter() - started)
            reservation = reserve(record=False)
        quota_wait(reservation)  # the intended sleep: not measured
    return samples, floor


# --- homes for each store -------------------------------------------------------------------


def _base_env(var_dir: str) -> dict[str, str]:
    return portal_environment(var_dir)


@contextmanager
def sqlite_home(var_dir: str, options: argparse.Namespace) -> Iterator[dict[str, str]]:
    yield _base_env(var_dir)


@contextmanager
def postgres_home(var_dir: str, options: argparse.Namespace) -> Iterator[dict[str, str]]:
    import psycopg

    name = f"ccportal_bench_{os.getpid()}"
    admin = psycopg.connect(options.pg_url, autocommit=True, connect_timeout=3)
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        env = _base_env(var_dir)
        env["DATABASE_URL"] = urlunsplit(urlsplit(options.pg_url)._replace(path=f"/{name}"))
        yield env
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@contextmanager
def redis_home(var_dir: str, options: argparse.Namespace) -> Iterator[dict[str, str]]:
    import redis

    client = redis.Redis.from_url(options.redis_url, socket_connect_timeout=2)
    client.flushdb()
    try:
        env = _base_env(var_dir)
        env.update(CC_QUOTA_STORE=REDIS_STORE, REDIS_URL=options.redis_url)
        yield env
    finally:
        client.flushdb()
        client.close()


HOMES: dict[str, Callable] = {"sqlite": sqlite_home, "postgres": postgres_home, "redis": redis_home}


def bench(store: str, options: argparse.Namespace) -> list[Result]:
    # load -> (calls/s the key allows, seconds timed, stress?)
    loads = {
        "standard 4/s": (4, options.cc_seconds, False),
        "partner 10/s": (10, options.cc_seconds, False),
        "fair 4/s": (4, options.cc_seconds, False),
        f"paced {options.paced_rate}/s": (options.paced_rate, options.seconds, True),
        "flat out": (FLAT_OUT_RATE, options.seconds, True),
    }
    var_dir = tempfile.mkdtemp(prefix=f"ccportal-bench-{store}-")
    context = multiprocessing.get_context("spawn")
    results = []
    try:
        with HOMES[store](var_dir, options) as env:
            with context.Pool(1) as setup:
                keys = setup.apply(
                    _prepare,
                    (env, [rate for rate, _, _ in loads.values()], options.processes),
                )
            with context.Pool(options.processes) as pool:
                for (load, (_, seconds, stress)), (api_key_id, account_ids) in zip(
                    loads.items(), keys, strict=True
                ):
                    start_at = time.time() + WARM_UP_SECONDS
                    end_at = start_at + seconds
                    fair = load.startswith("fair")
                    jobs = [
                        (env, api_key_id, account_id if fair else None, start_at, end_at)
                        for account_id in account_ids
                    ]
                    batches = pool.map(_measure, jobs, chunksize=1)
                    samples = [sample for batch, _ in batches for sample in batch]
                    floor = [sample for _, batch in batches for sample in batch]
                    results.append(Result(store, load, samples, seconds, stress, floor))
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default="sqlite,postgres,redis")
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument(
        "--cc-seconds", type=float, default=60.0, help="timed run of each CC-rate load"
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="timed run of each stress load")
    parser.add_argument("--paced-rate", type=int, default=1000, help="the paced key's calls/s")
    parser.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    options = parser.parse_args()
    stores = [s.strip() for s in options.stores.split(",") if s.strip()]
    unknown = set(stores) - set(HOMES)
    if unknown:
        parser.error(f"unknown store(s): {', '.join(sorted(unknown))}; choose from {list(HOMES)}")

    print(
        f"quota_reserve decision time: {options.processes} processes on one key, "
        f"{options.cc_seconds:g} s per CC-rate load, {options.seconds:g} s per stress load, "
        f"{os.cpu_count()} CPUs"
    )
    results: list[Result] = []
    for store in stores:
        try:
            results += bench(store, options)
        except Exception as exc:  # a store that is not there is reported, not fatal
            print(f"  {store}: skipped ({type(exc).__name__}: {str(exc).strip()[:200]})")

    header = (
        f"{'store':<10}{'load':<14}{'timed':>9}{'per s':>8}{'mean ms':>8}{'p50 ms':>8}"
        f"{'p99 ms':>8}{'max ms':>8}{'target':>10}  {'verdict':<18}{'floor p50/p99':>14}"
    )
    print(header)
    print("-" * len(header))
    for result in results:
        p50, p99 = result.percentile(0.50), result.percentile(0.99)
        target50, target99 = TARGETS[result.store]
        if result.stress:
            verdict = "stress: no target"
        else:
            verdict = "ok" if p50 <= target50 and p99 <= target99 else "OVER TARGET"
        print(
            f"{result.store:<10}{result.load:<14}{len(result.samples):>9}"
            f"{(len(result.samples) + len(result.floor)) / result.seconds:>8.0f}"
            f"{statistics.fmean(result.samples) * 1000:>8.2f}{p50:>8.2f}{p99:>8.2f}"
            f"{max(result.samples) * 1000:>8.2f}{f'{target50:g}/{target99:g}':>10}  "
            f"{verdict:<18}{result.floor_percentile(0.5):>7.2f}/{result.floor_percentile(0.99):.2f}"
        )
    print(
        "targets apply at CC's rates (the utilisation run's concurrency); stress rows show "
        "headroom.\nfloor: a bare round trip to the store (PING / SELECT 1) after the same idle "
        "wait, measured in the same processes: what waking up costs on this machine."
    )
    cpus = os.cpu_count() or 1
    if options.processes > cpus:
        print(
            f"note: {options.processes} processes share {cpus} CPUs; flat out, every process "
            f"is always runnable, so a booking also waits for a CPU (mean = processes / per s)."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

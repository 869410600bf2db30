"""The pages operators open every morning, over a big call log.

Seeds ``--calls`` (1,000,000) API calls over 30 days for 3 keys and 50 accounts — a mix of
successes, CC errors, throttled and quota 429s, background and interactive calls, some made
by sync jobs — with the rollups filled the way the portal fills them, then times, in-process
with Django's test client logged in: the dashboard, one key's live panel, the call log
unfiltered and with each filter, a call's detail page, and the CSV export of a filtered log.
Prints p50/p95 per page, on SQLite and (when it answers on 127.0.0.1) PostgreSQL.

    .venv/bin/python bench/bench_dashboard.py [--calls 1000000] [--runs 30] [--db sqlite,postgresql]

Targets: dashboard p95 <= 150 ms, call log (any single filter) p95 <= 250 ms.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchenv import portal_environment, portal_ready

KEYS = 3
ACCOUNTS = 50
DAYS = 30
PATHS = [
    ("GET", "/contact_lists"),
    ("GET", "/contacts"),
    ("GET", "/contacts/{id}"),
    ("PUT", "/contacts/{id}"),
    ("POST", "/activities/contacts_file_import"),
    ("POST", "/activities/remove_list_memberships"),
    ("GET", "/activities/{id}"),
    ("POST", "/activities/contact_exports"),
]
DASHBOARD_TARGET_MS = 150
CALL_LOG_TARGET_MS = 250


def _outcome(rng: random.Random) -> tuple[int | None, str]:
    roll = rng.random()
    if roll < 0.955:
        return 200, ""
    if roll < 0.965:
        return 429, "throttled"
    if roll < 0.97:
        return 429, "quota_exceeded"
    if roll < 0.985:
        return 500, "server_error"
    if roll < 0.995:
        return 404, "not_found"
    return None, "connection"


def seed(calls: int) -> dict:
    """Fill the database with ``calls`` calls and their rollups; returns ids the pages use."""
    import importlib

    from django.apps import apps
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction
    from django.db.models import Count, Q

    from integrations.models import (
        ApiCall,
        ApiKey,
        BulkJob,
        ConnectedAccount,
        DailyUsage,
        JobState,
        Lane,
    )

    rng = random.Random(7)
    keys = [
        ApiKey.objects.create(
            name=f"Key {i}",
            client_id=f"bench-key-{i}",
            redirect_uri="https://portal.example/accounts/callback/",
            tier=tier,
        )
        for i, tier in enumerate(["standard", "partner", "partner"])
    ]
    accounts = [
        ConnectedAccount.objects.create(
            api_key=keys[i % KEYS], label=f"org-{i}@example.com", cc_user_id=f"user-{i}"
        )
        for i in range(ACCOUNTS)
    ]
    jobs = [
        BulkJob.objects.create(account=accounts[i], list_id=f"list-{i}", state=JobState.COMPLETED)
        for i in range(20)
    ]
    now = dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(days=DAYS)
    span = (now - start).total_seconds()
    batch: list[ApiCall] = []
    started = time.perf_counter()
    for n in range(calls):
        account = accounts[rng.randrange(ACCOUNTS)]
        method, path = PATHS[rng.randrange(len(PATHS))]
        status, error_key = _outcome(rng)
        batch.append(
            ApiCall(
                api_key_id=account.api_key_id,
                account_id=account.pk,
                method=method,
                path_template=path,
                status_code=status,
                error_key=error_key if status != 200 else "",
                latency_ms=rng.randint(40, 900),
                lane=Lane.BACKGROUND if rng.random() < 0.4 else Lane.INTERACTIVE,
                bulk_job_id=jobs[rng.randrange(len(jobs))].pk if rng.random() < 0.05 else None,
                created_at=start + dt.timedelta(seconds=span * n / calls),
            )
        )
        if len(batch) == 10_000:
            with transaction.atomic():
                ApiCall.objects.bulk_create(batch)
            batch.clear()
    if batch:
        ApiCall.objects.bulk_create(batch)
    seeded = time.perf_counter() - started

    # The rollups, as recording each call would have left them.
    migration = importlib.import_module("integrations.migrations.0009_hourly_usage")
    migration.hourly_usage_backfill(apps, type("Editor", (), {"connection": connection})())
    from django.db.models.functions import TruncDate

    daily = (
        ApiCall.objects.annotate(day=TruncDate("created_at", tzinfo=dt.UTC))
        .values("api_key_id", "day")
        .annotate(
            calls=Count("pk"),
            errors=Count("pk", filter=Q(status_code__isnull=True) | Q(status_code__gte=400)),
            throttled=Count("pk", filter=Q(status_code=429, error_key="throttled")),
            quota_exceeded=Count("pk", filter=Q(status_code=429, error_key="quota_exceeded")),
        )
        .order_by()
    )
    DailyUsage.objects.bulk_create(
        DailyUsage(
            api_key_id=row["api_key_id"],
            date=row["day"],
            calls=row["calls"],
            errors=row["errors"],
            throttled=row["throttled"],
            quota_exceeded=row["quota_exceeded"],
        )
        for row in daily
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # fresh planner statistics, on SQLite and PostgreSQL alike
    user = get_user_model().objects.create_superuser("bench", "bench@example.com", "x")
    return {
        "user": user.pk,
        "key": keys[1].pk,
        "account": accounts[3].pk,
        "job": jobs[2].pk,
        "call": ApiCall.objects.order_by("-pk").values_list("pk", flat=True)[5000],
        "seconds": seeded,
        "since": (now - dt.timedelta(days=3)).strftime("%Y-%m-%dT%H:%M"),
        "until": (now - dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M"),
    }


def pages(ids: dict) -> list[tuple[str, str, int]]:
    """(name, URL, target in ms) of every page timed."""
    log = "/calls/"
    return [
        ("dashboard", "/", DASHBOARD_TARGET_MS),
        ("key panel", f"/keys/{ids['key']}/panel/", DASHBOARD_TARGET_MS),
        ("call log", log, CALL_LOG_TARGET_MS),
        ("call log ?status=429", f"{log}?status=429", CALL_LOG_TARGET_MS),
        ("call log ?status=5xx", f"{log}?status=5xx", CALL_LOG_TARGET_MS),
        ("call log ?account=", f"{log}?account={ids['account']}", CALL_LOG_TARGET_MS),
        ("call log ?key=", f"{log}?key={ids['key']}", CALL_LOG_TARGET_MS),
        ("call log ?lane=background", f"{log}?lane=background", CALL_LOG_TARGET_MS),
        ("call log ?path=activities", f"{log}?path=activities", CALL_LOG_TARGET_MS),
        ("call log ?job=", f"{log}?job={ids['job']}", CALL_LOG_TARGET_MS),
        (
            "call log ?since=&until=",
            f"{log}?since={ids['since']}&until={ids['until']}",
            CALL_LOG_TARGET_MS,
        ),
        ("call detail", f"{log}{ids['call']}/", CALL_LOG_TARGET_MS),
    ]


def measure(database: str, calls: int, runs: int, queue: multiprocessing.Queue) -> None:
    """In a spawned process: a fresh portal on ``database``, seeded, then every page timed."""
    home = tempfile.mkdtemp(prefix="ccportal-bench-dashboard-")
    pg_name = None
    try:
        env = portal_environment(home)
        if database == "postgresql":
            import psycopg

            pg_name = f"ccportal_bench_{multiprocessing.current_process().pid}"
            with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as c:
                c.execute(f'CREATE DATABASE "{pg_name}"')
            env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{pg_name}"
        env["ALLOWED_HOSTS"] = "testserver"
        portal_ready(env)
        ids = seed(calls)
        from django.contrib.auth import get_user_model
        from django.test import Client

        client = Client()
        client.force_login(get_user_model().objects.get(pk=ids["user"]))
        results = []
        for name, url, target in pages(ids):
            status = client.get(url).status_code  # warm up (and check it answers)
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                client.get(url)
                times.append((time.perf_counter() - started) * 1000)
            times.sort()
            p95 = times[max(0, int(len(times) * 0.95) - 1)]
            results.append((name, status, statistics.median(times), p95, target))
        export = f"/calls/export.csv?key={ids['key']}&status=4xx"
        started = time.perf_counter()
        response = client.get(export)
        rows = sum(chunk.count(b"\n") for chunk in getattr(response, "streaming_content", []))
        export_seconds = time.perf_counter() - started
        queue.put((database, ids["seconds"], results, (response.status_code, rows, export_seconds)))
    finally:
        from django.db import connections

        connections.close_all()
        if pg_name:
            import psycopg

            with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
        shutil.rmtree(home, ignore_errors=True)


def _postgres_answers() -> bool:
    try:
        import psycopg

        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", connect_timeout=2):
            return True
    except Exception:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--db", default="sqlite,postgresql")
    args = parser.parse_args()
    missed = 0
    context = multiprocessing.get_context("spawn")
    for database in args.db.split(","):
        if database == "postgresql" and not _postgres_answers():
            print("postgresql: skipped (nothing answers on 127.0.0.1:5432)")
            continue
        queue = context.Queue()
        process = context.Process(target=measure, args=(database, args.calls, args.runs, queue))
        process.start()
        database, seeded, results, export = queue.get()
        process.join()
        print(f"\n{database}: {args.calls:,} calls seeded in {seeded:.0f} s; {args.runs} runs each")
        print(f"  {'page':<28} {'status':>6} {'p50 ms':>8} {'p95 ms':>8} {'target':>7}")
        for name, status, p50, p95, target in results:
            ok = status == 200 and p95 <= target
            missed += not ok
            mark = "ok" if ok else "MISSED"
            print(f"  {name:<28} {status:>6} {p50:>8.1f} {p95:>8.1f} {target:>7} {mark}")
        status, rows, seconds = export
        print(f"  CSV export (key, 4xx): status {status}, {rows:,} lines in {seconds:.2f} s")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: sync a 100,000-member list with 10 % churn in a handful of bulk calls.

    .venv/bin/python bench/bench_bulk_sync.py [--members 100000] [--churn 5000]
                                              [--speed 20000]

Set up like a deployment: its own sandbox process (``manage.py run_sandbox --port 0``), a
fresh SQLite database in a temporary folder (``migrate``), a standard-tier
API key and an account connected through the OAuth flow. The sandbox list holds ``--members``
contacts; the desired CSV drops the first ``--churn`` of them and adds ``--churn`` new ones.
The job is planned, approved and run in this process, exactly as a worker runs it.

Prints:

* API calls the job used, status polls included, against the plan and against one call per
  changed contact (target ≤ 12);
* local processing time: wall time minus the time spent inside HTTP requests to CC and
  sleeping (waiting for activities or for a rate-limit slot) — measured by wrapping
  ``requests.Session.request`` and ``time.sleep`` (target ≤ 5 s);
* the peak RSS of this process, which ran the job (target ≤ 200 MB);
* the sandbox's activity speed (``activity_items_per_second``).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from integrations.sandbox.process import start_sandbox  # noqa: E402

CLIENT_ID = "bench-bulk-app"
SECRET = "bench-bulk-secret"
REDIRECT_URI = "http://127.0.0.1:8000/accounts/callback/"
TARGET_CALLS, TARGET_LOCAL_SECONDS, TARGET_RSS_MB = 12, 5.0, 200


class Clock:
    """Seconds spent waiting (in HTTP requests, or asleep) while ``active``."""

    def __init__(self) -> None:
        self.http = self.sleep = 0.0
        self.active = False

    def install(self) -> None:
        import requests

        real_request, real_sleep = requests.Session.request, time.sleep
        clock = self

        def request(session, *args, **kwargs):
            started = time.perf_counter()
            try:
                return real_request(session, *args, **kwargs)
            finally:
                if clock.active:
                    clock.http += time.perf_counter() - started

        def sleep(seconds: float) -> None:
            started = time.perf_counter()
            real_sleep(seconds)
            if clock.active:
                clock.sleep += time.perf_counter() - started

        requests.Session.request = request
        time.sleep = sleep


def _desired_csv(path: Path, *, members: int, churn: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write("email,first_name,last_name\n")
        for n in range(churn + 1, members + churn + 1):
            out.write(f"member{n}@example.com,First{n},Last{n}\n")


def _chunks(path: Path):
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            yield chunk


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--churn", type=int, default=5_000, help="adds, and as many removals")
    parser.add_argument("--speed", type=int, default=20_000, help="activity_items_per_second")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-bulk-"))
    sandbox = start_sandbox(port=0)
    try:
        os.environ.update(
            DJANGO_SETTINGS_MODULE="ccportal.settings",
            DJANGO_ENV="development",
            DEBUG="false",
            LOG_LEVEL="WARNING",
            CCPORTAL_VAR_DIR=str(home),
            DATABASE_URL=f"sqlite:///{home / 'ccportal.sqlite3'}",
            REDIS_URL="",
            CC_MODE="sandbox",
            CC_SANDBOX_URL=sandbox.url,
        )
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        return _run(sandbox.control, home, args)
    finally:
        sandbox.stop()


def _run(control, home: Path, args: argparse.Namespace) -> int:
    from urllib.parse import parse_qs, urlsplit

    from integrations.models import JobState
    from integrations.services import bulk_jobs, bulk_runner
    from integrations.services.keys import api_key_create
    from integrations.services.oauth import connect_complete, connect_start

    control.set_options(activity_items_per_second=args.speed)
    control.register_client(CLIENT_ID, redirect_uris=[REDIRECT_URI], client_secret=SECRET)
    api_key = api_key_create(
        name="Bench", client_id=CLIENT_ID, client_secret=SECRET, redirect_uri=REDIRECT_URI
    )
    cc_account = control.create_account("bench@example.com", name="Bench")
    target = control.seed_list(cc_account, "Members")
    control.seed_contacts(
        cc_account,
        count=args.members,
        list_ids=[target.list_id],
        email_template="member{n}@example.com",
    )
    session: dict = {}
    query = {
        k: v[0]
        for k, v in parse_qs(
            urlsplit(connect_start(session=session, api_key=api_key)).query
        ).items()
    }
    code = control.authorize(
        CLIENT_ID, query["redirect_uri"], query["scope"], query["state"], account=cc_account
    )
    account = connect_complete(session=session, params={"code": code, "state": query["state"]})
    account = account.account
    desired_path = home / "desired.csv"
    _desired_csv(desired_path, members=args.members, churn=args.churn)
    control.reset_stats()

    clock = Clock()
    clock.install()
    clock.active = True
    started = time.perf_counter()
    job = bulk_jobs.bulk_job_create(
        account=account,
        list_id=target.list_id,
        list_name=target.name,
        csv_chunks=_chunks(desired_path),
    )
    bulk_runner.bulk_job_advance(job_id=job.pk, max_inline_wait=3600)
    job.refresh_from_db()
    assert job.state == JobState.PLANNED, (job.state, job.error)
    bulk_jobs.bulk_job_approve(allow_removals=True, job=job)
    bulk_runner.bulk_job_advance(job_id=job.pk, max_inline_wait=3600)
    wall = time.perf_counter() - started
    clock.active = False
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    job.refresh_from_db()

    stats = control.stats(CLIENT_ID)
    members = {m.email for m in control.list_members(cc_account, target.list_id)}
    wanted = {
        f"member{n}@example.com" for n in range(args.churn + 1, args.members + args.churn + 1)
    }
    local = wall - clock.http - clock.sleep
    polls = sum(
        sum(by_status.values())
        for path, by_status in stats.by_path.items()
        if path.startswith("GET /v3/activities")
    )
    plan = job.plan
    print(f"List of {args.members:,} members, {args.churn:,} adds + {args.churn:,} removals")
    print(f"Sandbox activity speed: {args.speed:,} items/s (activity_items_per_second)")
    print(f"Job: {job.state}; list exactly the desired set: {members == wanted}")
    print(f"Strategy: {plan.get('strategy')} ({plan.get('reason')})")
    print(
        f"API calls: {stats.requests} at CC ({job.calls_used} recorded by the job), "
        f"{polls} of them status polls; planned {job.calls_planned}; "
        f"target ≤ {TARGET_CALLS}; one call per contact: {plan.get('single_call_equivalent'):,}"
    )
    for path, by_status in sorted(stats.by_path.items()):
        print(f"    {sum(by_status.values()):3d}  {path}")
    print(
        f"Wall time {wall:.2f} s = waiting for CC {clock.http:.2f} s + sleeping "
        f"{clock.sleep:.2f} s + local processing {local:.2f} s (target ≤ {TARGET_LOCAL_SECONDS} s)"
    )
    print(
        f"Peak RSS of the process running the job: {peak_rss_mb:.0f} MB (target ≤ {TARGET_RSS_MB})"
    )
    ok = (
        job.state == JobState.COMPLETED
        and members == wanted
        and stats.requests <= TARGET_CALLS
        and local <= TARGET_LOCAL_SECONDS
        and peak_rss_mb <= TARGET_RSS_MB
    )
    print("PASS" if ok else "MISSED A TARGET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""A refresh storm: many accounts' access tokens expire at once while 8 processes x 8 threads
keep asking for them.

    .venv/bin/python bench/bench_refresh_storm.py [--accounts 60] [--processes 8] [--threads 8]

Starts the sandbox on a free loopback port and a throw-away SQLite database (as ``make run``
would), connects ``--accounts`` CC accounts through one API key, marks every access token
expired, then lets the processes ask for random accounts' tokens until every account holds a
fresh one. Prints the token requests per expired account (1.0 is ideal: one refresh each), the
token-endpoint 429s, the busiest second at the token endpoint (CC allows 1 request/s per
client_id), and the time until every account had recovered (bounded below by one refresh per
second per key).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from benchenv import REPO, django_setup

CLIENT_ID = "storm-bench"
REDIRECT = "http://127.0.0.1:8000/accounts/callback/"


def _prepare(env: dict[str, str], sandbox_url: str, accounts: int) -> list[int]:
    django_setup(env)
    import datetime as dt

    from django.core.management import call_command
    from django.utils import timezone

    from integrations.models import ConnectedAccount
    from integrations.sandbox.control import SandboxControl
    from integrations.services.keys import api_key_create

    call_command("migrate", verbosity=0, interactive=False)
    control = SandboxControl(sandbox_url)
    control.register_client(
        CLIENT_ID, redirect_uris=[REDIRECT], client_secret="s", refresh_mode="rotating"
    )
    key = api_key_create(
        name="Storm", client_id=CLIENT_ID, client_secret="s", redirect_uri=REDIRECT
    )
    ids = []
    for n in range(accounts):
        owner = control.create_account(f"storm{n}@example.com")
        tokens = control.mint_tokens(CLIENT_ID, account=owner)
        ids.append(
            ConnectedAccount.objects.create(
                api_key=key,
                cc_user_id=owner.sub,
                label=owner.email,
                access_token=tokens["access_token"],
                refresh_token=tokens["refresh_token"],
                access_expires_at=timezone.now() - dt.timedelta(seconds=1),
                scopes=["contact_data", "offline_access"],
                token_version=1,
            ).pk
        )
    return ids


def _hammer(job: tuple[dict[str, str], list[int], int, float]) -> dict[int, float]:
    """Threads ask for random accounts' tokens until each account seen has a fresh one;
    returns account id -> when this process first got its fresh token."""
    import threading

    env, ids, threads, start_at = job
    django_setup(env)
    from django.db import connection
    from django.utils import timezone

    from integrations.models import ConnectedAccount
    from integrations.services.tokens import access_token

    recovered: dict[int, float] = {}
    lock = threading.Lock()
    time.sleep(max(0.0, start_at - time.time()))

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while True:
                with lock:
                    pending = [pk for pk in ids if pk not in recovered]
                if not pending:
                    return
                pk = rng.choice(pending)
                account = ConnectedAccount.objects.select_related("api_key").get(pk=pk)
                access_token(account=account)
                account.refresh_from_db(fields=["access_expires_at"])
                if account.access_expires_at > timezone.now():
                    with lock:
                        recovered.setdefault(pk, time.time())
        finally:
            connection.close()

    pool = [threading.Thread(target=worker, args=(os.getpid() * 100 + i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return recovered


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=60)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--threads", type=int, default=8)
    options = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from integrations.sandbox.control import SandboxControl
    from integrations.sandbox.process import start_sandbox

    with (
        tempfile.TemporaryDirectory(prefix="ccportal-storm-") as var_dir,
        start_sandbox(port=0) as sandbox,
    ):
        env = {
            "DJANGO_SETTINGS_MODULE": "ccportal.settings",
            "CCPORTAL_VAR_DIR": var_dir,
            "DATABASE_URL": f"sqlite:///{Path(var_dir) / 'storm.sqlite3'}",
            "REDIS_URL": "",
            "CC_QUOTA_STORE": "integrations.services.quota_stores.DatabaseStore",
            "CC_MODE": "sandbox",
            "CC_SANDBOX_URL": sandbox.url,
            "LOG_LEVEL": "ERROR",
            "CC_TOKEN_WAIT_SECONDS": "600",
        }
        context = multiprocessing.get_context("spawn")
        with context.Pool(1) as pool:
            ids = pool.apply(_prepare, (env, sandbox.url, options.accounts))
        control = SandboxControl(sandbox.url)
        control.reset_stats()
        start_at = time.time() + 3
        with context.Pool(options.processes) as pool:
            results = pool.map(_hammer, [(env, ids, options.threads, start_at)] * options.processes)
        recovered = {}
        for result in results:
            for pk, when in result.items():
                recovered[pk] = min(when, recovered.get(pk, when))
        stats = control.stats(CLIENT_ID)
        took = max(recovered.values()) - start_at
        print(f"accounts expired together     {options.accounts}")
        print(
            f"callers                       {options.processes} processes x {options.threads} threads"
        )
        print(f"token requests                {stats.token_requests}")
        print(
            f"token requests per expiry     {stats.token_requests / options.accounts:.2f}  (ideal 1.00)"
        )
        print(f"token-endpoint 429s           {stats.token_429}")
        print(f"busiest second at /token      {stats.max_token_requests_per_second} (CC allows 1)")
        print(
            f"time until all recovered      {took:.1f} s  (floor: one refresh per 1.25 s slot = {(options.accounts - 1) * 1.25:.1f} s)"
        )
        print(
            f"mean time to recover          {sum(w - start_at for w in recovered.values()) / len(recovered):.1f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Two portal "hosts" share PostgreSQL and Redis, as "Running at scale" in the README describes:
two process groups on their own ports, each a gunicorn (from ``gunicorn.conf.py``) and a
``db_worker``. Callers drive both hosts through the proxy at once; the key's limits hold across
them (CC never answers 429), every call lands in the one call log, and both workers take tasks
from the one queue."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.db import connection
from django_tasks.base import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from integrations.models import ApiCall
from integrations.services.proxy_tokens import proxy_token_create
from integrations.tasks import alerts_deliver_task
from tests.support_serve import ROOT, free_port, port_open, wait_until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.skipif(
        not settings.REDIS_URL or settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"),
        reason="two hosts share PostgreSQL and Redis (CI's second pass)",
    ),
]

CALLS = 32
CALLERS = 8


def _host_env(sandbox_url: str) -> dict[str, str]:
    """What each host is given: the test's own settings module and folder (so the same
    encryption keys and Redis scope), this test's database, and the sandbox as CC."""
    db = connection.settings_dict
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "ccportal.settings_test",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CC_MODE": "sandbox",
        "CC_SANDBOX_URL": sandbox_url,
        "GUNICORN_WORKERS": "1",
        "GUNICORN_THREADS": "8",
        "LOG_LEVEL": "WARNING",
    }


def _start_host(stack: ExitStack, env: dict[str, str], port: int, log: Path) -> None:
    """gunicorn on ``port`` and one db_worker; both stopped (SIGTERM) when ``stack`` closes."""
    out = stack.enter_context(log.open("w"))
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "ccportal.wsgi", "--bind", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "db_worker", "--interval", "0.2"],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    for process in (web, worker):
        stack.callback(_stop, process)
    wait_until(lambda: port_open(port), within=90, what=f"gunicorn never listened:\n{_tail(log)}")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(log: Path) -> str:
    return log.read_text()[-3000:]


def test_two_hosts_share_the_key_the_call_log_and_the_task_queue(
    cc_app, connected_account, tmp_path
):
    account = connected_account
    secret = proxy_token_create(name="two-hosts", accounts=[account])[1]
    env = _host_env(cc_app.sandbox.url)
    ports = [free_port(), free_port()]
    with ExitStack() as stack:
        for n, port in enumerate(ports):
            _start_host(stack, env, port, tmp_path / f"host{n}.log")
        cc_app.sandbox.reset_stats()

        def call(n: int) -> requests.Response:
            return requests.get(
                f"http://127.0.0.1:{ports[n % 2]}/proxy/v3/contact_lists",
                headers={
                    "Authorization": f"Bearer {secret}",
                    "X-CC-Lane": "background" if n % 4 < 2 else "interactive",
                },
                timeout=90,
            )

        with ThreadPoolExecutor(CALLERS) as pool:
            answers = list(pool.map(call, range(CALLS)))

        assert [a.status_code for a in answers] == [200] * CALLS, [
            (a.status_code, a.text[:200]) for a in answers if a.status_code != 200
        ]
        assert {row["name"] for row in answers[0].json()["lists"]} == {"Newsletter", "Customers"}
        call_ids = {int(a.headers["X-CC-Call-Id"]) for a in answers}
        assert len(call_ids) == CALLS, "each answer names its own call"
        recorded = ApiCall.objects.filter(proxy_token__name="two-hosts")
        assert call_ids <= set(recorded.values_list("pk", flat=True))
        # Every attempt is recorded: on a loaded machine an attempt may fail and be retried,
        # but only the answered ones succeeded.
        assert set(recorded.filter(status_code__lt=400).values_list("pk", flat=True)) == call_ids

        stats = cc_app.sandbox.stats(cc_app.api_key.client_id)
        assert stats.throttled == 0 and stats.quota_exceeded == 0
        assert stats.max_accepted_per_second <= cc_app.api_key.per_second

        # Both workers take tasks from the one queue: small tasks go in until each worker
        # has run one (a deadline, not a count: which worker claims which is up to them).
        def both_workers_took_tasks() -> bool:
            for _ in range(4):
                alerts_deliver_task.enqueue()
            done = DBTaskResult.objects.filter(
                task_path=alerts_deliver_task.module_path, status=TaskResultStatus.SUCCESSFUL
            )
            return len({w for ids in done.values_list("worker_ids", flat=True) for w in ids}) >= 2

        wait_until(both_workers_took_tasks, within=90, what="both hosts' workers run tasks")

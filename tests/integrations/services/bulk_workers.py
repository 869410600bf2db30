"""A real ``manage.py db_worker`` process on the test database, for the bulk sync tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[3]
# What a child must share with the test process besides the database: the quota ledger and
# the bulk engine's (shortened) timings.
INHERITED = [
    "REDIS_URL",
    "CC_QUOTA_STORE",
    "CC_QUOTA_REDIS_PREFIX",
    "CC_BULK_FIRST_POLL_DELAY",
    "CC_BULK_MAX_POLL_DELAY",
    "CC_BULK_LEASE_SECONDS",
    "CC_BULK_WATCHDOG_SECONDS",
    "CC_JWT_ISSUER",
    "CC_JWT_AUDIENCE",
]


def child_settings(overrides: dict[str, Any]) -> dict[str, Any]:
    """The settings of this test process a child needs, plus ``overrides`` (sandbox URLs)."""
    database = {
        key: connection.settings_dict[key]
        for key in ("ENGINE", "NAME", "USER", "PASSWORD", "HOST", "PORT", "OPTIONS")
        if key in connection.settings_dict
    }
    shared = {name: getattr(settings, name) for name in INHERITED if hasattr(settings, name)}
    return {"DATABASE": database, **shared, **overrides}


class Worker:
    """``manage.py db_worker --queue-name '*'`` in its own process group; ``kill()`` is SIGKILL."""

    def __init__(self, overrides: dict[str, Any], *, log: Path) -> None:
        self.overrides = overrides
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> Worker:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.integrations.services.bulk_worker_settings",
            "CCPORTAL_CHILD_SETTINGS": json.dumps(child_settings(self.overrides)),
        }
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "manage.py",
                    "db_worker",
                    "--queue-name",
                    "*",
                    "--no-reload",
                    "--no-startup-delay",
                    "--interval",
                    "0.1",
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, no finally blocks, the lease stays taken."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for(predicate, *, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")

"""The worker's console: failed tasks show, routine task runs do not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support_procs import fresh_portal_env

ROOT = Path(__file__).resolve().parents[2]

ENQUEUE = """
import django
django.setup()
from integrations.tasks import bulk_job_run_task, bulk_jobs_watchdog_task
bulk_jobs_watchdog_task.enqueue()
bulk_job_run_task.enqueue(987654)  # no such job: the task fails
"""


def _worker_output(tmp_path: Path, **env: str) -> str:
    portal = fresh_portal_env(tmp_path, **env)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *args],
            cwd=ROOT,
            env=portal,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert run("manage.py", "migrate", "-v", "0").returncode == 0
    assert run("-c", ENQUEUE).returncode == 0
    worker = run("manage.py", "db_worker", "--batch", "--no-startup-delay", "--queue-name", "*")
    assert worker.returncode == 0, worker.stderr
    return worker.stdout + worker.stderr


@pytest.mark.slow
def test_worker_console_shows_a_failed_task_but_not_routine_runs(tmp_path):
    output = _worker_output(tmp_path)
    assert "integrations.tasks.bulk_job_run_task state=FAILED" in output
    assert "DoesNotExist" in output  # with its traceback
    assert "state=SUCCESSFUL" not in output
    assert "state=RUNNING" not in output


@pytest.mark.slow
def test_log_level_debug_shows_every_task_run(tmp_path):
    output = _worker_output(tmp_path, LOG_LEVEL="DEBUG")
    assert "integrations.tasks.bulk_jobs_watchdog_task state=SUCCESSFUL" in output
    assert "state=FAILED" in output

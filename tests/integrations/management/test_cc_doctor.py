"""``manage.py cc_doctor``: one line per check, exit status 1 naming what failed, no secret and
no traceback ever; and a portal set up as ``make run`` does passes it."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from io import StringIO
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command, execute_from_command_line
from django.utils import timezone

from integrations.models import AccountStatus, ConnectedAccount, WorkerHeartbeat
from integrations.permissions import VIEW_PORTAL, refusal_message
from tests.factories import VIEWERS, PortalUserFactory
from tests.integrations.services.doctor_support import (
    REDIS_PASSWORD,
    CCStub,
    cc_stub_serving,
    closed_port,
    point_cc_at,
    portal_in_health,
    redis_down_settings,
    used_today,
)
from tests.support_procs import fresh_portal_env

ROOT = Path(__file__).resolve().parents[3]
CHECKS = 11


@pytest.fixture
def cc_stub(settings) -> Iterator[CCStub]:
    with cc_stub_serving(settings) as stub:
        yield stub


@pytest.fixture
def healthy_portal(db, cc_stub) -> ConnectedAccount:
    return portal_in_health()


@pytest.fixture(autouse=True)
def _as_the_operator(monkeypatch):
    monkeypatch.delenv("CCPORTAL_CLI_USER", raising=False)


def doctor(*args: str) -> tuple[list[str], CommandError | None]:
    """The command's output lines, and its CommandError when a check failed."""
    out = StringIO()
    try:
        call_command("cc_doctor", *args, stdout=out)
    except CommandError as failed:
        return out.getvalue().splitlines(), failed
    return out.getvalue().splitlines(), None


def test_a_healthy_portal_prints_one_ok_line_per_check_and_exits_0(healthy_portal):
    lines, failed = doctor()

    assert failed is None
    assert len(lines) == CHECKS
    assert all(line.startswith("ok   ") for line in lines), lines
    assert lines[0].startswith("ok   settings: test profile, DEBUG off, CC_MODE sandbox")
    assert lines[-1].startswith("ok   refresh_tokens: ")


def _redis_down(portal, settings) -> None:
    redis_down_settings(settings)


def _wrong_encryption_key(portal, settings) -> None:
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]


def _no_worker(portal, settings) -> None:
    WorkerHeartbeat.objects.update(seen_at=timezone.now() - dt.timedelta(minutes=12))


def _cc_unreachable(portal, settings) -> None:
    point_cc_at(settings, f"http://127.0.0.1:{closed_port()}")


def _account_needs_reconnect(portal, settings) -> None:
    used_today(
        api_key=portal.api_key, label="lost@example.com", status=AccountStatus.NEEDS_RECONNECT
    )


def _refresh_token_idle(portal, settings) -> None:
    portal.refresh_token_last_used_at = timezone.now() - dt.timedelta(days=151)
    portal.save()


TROUBLES: dict[str, tuple[Callable, str]] = {
    "redis unreachable": (_redis_down, "FAIL quota_store: The quota ledger in Redis at 127.0.0.1:"),
    "wrong encryption key": (
        _wrong_encryption_key,
        "FAIL encryption: no key in FIELD_ENCRYPTION_KEYS opens 2 row(s): API key ",
    ),
    "no worker heartbeat": (_no_worker, "FAIL worker: no worker has taken a task for 12 min"),
    "cc unreachable": (_cc_unreachable, "FAIL cc_endpoints: the sandbox: API http://127.0.0.1:"),
    "account needs reconnect": (
        _account_needs_reconnect,
        "FAIL accounts: 1 account(s) need a reconnect: 'lost@example.com'",
    ),
    "refresh token idle": (
        _refresh_token_idle,
        "FAIL refresh_tokens: 1 refresh token(s) idle 150 days",
    ),
}


@pytest.mark.parametrize("trouble", TROUBLES)
def test_each_trouble_prints_its_fail_line_and_exits_1(healthy_portal, settings, trouble):
    cause, expected = TROUBLES[trouble]
    cause(healthy_portal, settings)

    lines, failed = doctor()

    assert failed is not None and failed.returncode == 1
    assert len(lines) == CHECKS
    assert any(line.startswith(expected) for line in lines), "\n".join(lines)
    failing = [line for line in lines if line.startswith("FAIL ")]
    assert str(failed) == f"{len(failing)} of {CHECKS} checks failed."
    assert all(" — " in line for line in failing)  # every FAIL says how to fix it


def test_a_skewed_clock_prints_its_fail_line(healthy_portal, cc_stub):
    cc_stub.offset = -3600

    lines, failed = doctor()

    assert failed is not None
    (clock,) = [line for line in lines if line.startswith("FAIL clock: ")]
    assert "s ahead of the sandbox's (its Date header)" in clock
    assert "3,60" in clock  # 3,599 to 3,601 s: the header has whole seconds


@pytest.mark.django_db(transaction=True)
def test_a_missing_migration_prints_its_fail_line(cc_stub):
    call_command("migrate", "integrations", "0010", verbosity=0)
    try:
        lines, failed = doctor()
    finally:
        call_command("migrate", verbosity=0)

    assert failed is not None and failed.returncode == 1
    (database,) = [line for line in lines if line.startswith("FAIL database: ")]
    assert "integrations.0011_worker_heartbeat_account_summary" in database
    assert database.endswith(" — run manage.py migrate")


def test_the_exit_status_is_1_and_no_traceback_is_printed(healthy_portal, capsys, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("a check's own bug")

    monkeypatch.setattr("integrations.services.doctor.WorkerHeartbeat.objects.order_by", explode)

    with pytest.raises(SystemExit) as exited:
        execute_from_command_line(["manage.py", "cc_doctor"])

    assert exited.value.code == 1
    printed = capsys.readouterr()
    assert "FAIL worker: could not be checked (RuntimeError: a check's own bug)" in printed.out
    assert printed.err.strip() == "CommandError: 1 of 11 checks failed."
    assert "Traceback" not in printed.out + printed.err


def test_no_line_holds_a_password_from_redis_url(healthy_portal, settings, capsys):
    redis_down_settings(settings)

    for args in ([], ["--json"]):
        with pytest.raises(SystemExit):
            execute_from_command_line(["manage.py", "cc_doctor", *args])
        printed = capsys.readouterr()
        assert "FAIL" in printed.out or '"ok": false' in printed.out
        assert REDIS_PASSWORD not in printed.out + printed.err


def test_json_lists_name_ok_detail_and_fix(healthy_portal, settings):
    _no_worker(healthy_portal, settings)
    out = StringIO()

    with pytest.raises(CommandError):
        call_command("cc_doctor", "--json", stdout=out)

    results = json.loads(out.getvalue())
    assert len(results) == CHECKS
    assert all(set(r) == {"name", "ok", "detail", "fix"} for r in results)
    (worker,) = [r for r in results if not r["ok"]]
    assert worker["name"] == "worker"
    assert worker["fix"] == "start one: manage.py db_worker"


def test_a_viewer_may_run_it_and_a_login_without_view_may_not(healthy_portal):
    PortalUserFactory(username="vera", groups=[VIEWERS])
    lines, failed = doctor("--as-user", "vera")
    assert failed is None and len(lines) == CHECKS

    nobody = PortalUserFactory(username="nils")
    lines, failed = doctor("--as-user", "nils")
    assert lines == []
    assert str(failed) == refusal_message(nobody, VIEW_PORTAL)


PREPARE_LIKE_MAKE_RUN = """
import django
django.setup()
from integrations.services.sandbox_setup import sandbox_prepare_for_portal
from integrations.tasks import periodic_tasks_ensure_scheduled
print(sandbox_prepare_for_portal(sandbox_url={url!r}, portal_url="http://127.0.0.1:8000"))
periodic_tasks_ensure_scheduled()
"""


@pytest.mark.slow
def test_a_portal_set_up_like_make_run_passes(tmp_path, sandbox):
    sandbox.reset()
    portal = fresh_portal_env(tmp_path, CC_SANDBOX_URL=sandbox.url)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *args],
            cwd=ROOT,
            env=portal,
            capture_output=True,
            text=True,
            timeout=120,
        )

    steps = [
        ("manage.py", "migrate", "--noinput", "-v", "0"),
        ("manage.py", "ensure_staff_login"),
        ("-c", PREPARE_LIKE_MAKE_RUN.format(url=sandbox.url)),
        # One round of the worker: it takes the queued heartbeat (and the other chains).
        ("manage.py", "db_worker", "--batch", "--no-startup-delay", "--queue-name", "*"),
    ]
    for step in steps:
        done = run(*step)
        assert done.returncode == 0, f"{step}: {done.stdout}{done.stderr}"

    checked = run("manage.py", "cc_doctor")

    assert checked.returncode == 0, checked.stdout + checked.stderr
    lines = checked.stdout.splitlines()
    assert len(lines) == CHECKS
    assert all(line.startswith("ok   ") for line in lines), checked.stdout
    assert "ok   settings: development profile, DEBUG on, CC_MODE sandbox" in lines[0]
    assert any(line.startswith("ok   worker: 1 worker(s) taking tasks") for line in lines)
    assert any(line.startswith("ok   api_keys: 1 key(s)") for line in lines)

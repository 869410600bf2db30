"""The world a fault scenario runs in: one sandbox process, one throw-away portal (SQLite in
a temporary folder) that this process and its child processes share, real ``db_worker``
processes, and per scenario its own API key, CC account and list, so the sandbox's figures
for that key are the scenario's alone."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from benchenv import portal_environment  # noqa: E402

from integrations.sandbox.process import start_sandbox  # noqa: E402

CHILD = REPO / "bench" / "faults_support" / "child.py"
SECRET = "faults-suite-client-secret"
REDIRECT_URI = "http://127.0.0.1:8000/accounts/callback/"
PORTAL_VARIABLES = ("CC_", "CCPORTAL_", "DJANGO_", "DATABASE_URL", "REDIS_URL", "LOG_LEVEL")


def fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


@dataclass
class Timings:
    """Sizes and waits of one mode (``--quick`` or the full suite)."""

    members: int
    adds: int
    removes: int
    outage_seconds: float
    redis_outage_seconds: float
    lock_seconds: float
    locks: int
    kills: int
    job_timeout: float

    @classmethod
    def for_mode(cls, *, quick: bool) -> Timings:
        if quick:
            return cls(900, 300, 600, 5.0, 5.0, 2.0, 2, 3, 90.0)
        return cls(4000, 2000, 1600, 60.0, 30.0, 5.0, 3, 5, 300.0)


# The engine's waits, shortened so a scenario takes seconds; the read timeout is what the
# "timeout after CC applied" fault must outlast.
SUITE_SETTINGS = {
    "CC_API_CONNECT_TIMEOUT": "1",
    "CC_API_READ_TIMEOUT": "2",
    "CC_BULK_FIRST_POLL_DELAY": "0.3",
    "CC_BULK_MAX_POLL_DELAY": "1",
    "CC_BULK_LEASE_SECONDS": "3",
    "CC_BULK_WATCHDOG_SECONDS": "1",
    "CC_BULK_RESUME_AFTER": "2",
    "CC_TOKEN_LEASE_SECONDS": "3",
    "CC_TOKEN_WAIT_SECONDS": "40",
}


class Proc:
    """A child process in its own session, its output in a log file; ``kill`` is SIGKILL."""

    def __init__(self, args: list[str], *, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                args,
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        if self.alive():
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout=timeout)

    def json_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    lines.append(json.loads(line))
        return lines


@dataclass
class Scenario:
    """One API key, one CC account with one list, and that account connected in the portal."""

    world: World
    name: str
    client_id: str
    cc_account: Any
    list_id: str
    account: Any
    procs: list[Proc] = field(default_factory=list)

    @property
    def control(self):
        return self.world.control

    def emails(self, start: int, stop: int) -> list[str]:
        return [f"{self.client_id}-m{n}@example.com" for n in range(start, stop)]

    def seed_members(self, count: int) -> None:
        self.control.seed_contacts(
            self.cc_account,
            count=count,
            start=0,
            list_ids=[self.list_id],
            email_template=f"{self.client_id}-m{{n}}@example.com",
        )

    def members(self) -> set[str]:
        return {m.email for m in self.control.list_members(self.cc_account, self.list_id)}

    def worker(self, **env: str) -> Proc:
        args = [sys.executable, "manage.py", "db_worker", "--queue-name", "*", "--no-reload"]
        args += ["--no-startup-delay", "--interval", "0.1"]
        proc = Proc(args, env=self.world.child_env(**env), log=self.world.log("worker"))
        self.procs.append(proc)
        return proc

    def child(self, *args: str, **env: str) -> Proc:
        proc = Proc(
            [sys.executable, str(CHILD), *args],
            env=self.world.child_env(**env),
            log=self.world.log(args[0]),
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            proc.kill()
        self.procs.clear()


class World:
    def __init__(self, *, quick: bool) -> None:
        self.quick = quick
        self.timings = Timings.for_mode(quick=quick)
        self.home = Path(tempfile.mkdtemp(prefix="ccportal-faults-"))
        self._logs = 0
        self.sandbox = start_sandbox(port=0)
        self.control = self.sandbox.control
        self.encryption_keys = [fernet_key()]
        self.env = {
            **portal_environment(str(self.home), sandbox_url=self.sandbox.url),
            **SUITE_SETTINGS,
            "FIELD_ENCRYPTION_KEYS": ",".join(self.encryption_keys),
            "CC_BULK_RESUME_AFTER": "2" if quick else "5",
        }
        # Nothing of a portal this process was started from (a test run's settings) leaks in.
        for name in [n for n in os.environ if n.startswith(PORTAL_VARIABLES)]:
            del os.environ[name]
        os.environ.update(self.env)
        os.chdir(REPO)
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        # Activities take a while at least, so kills and outages land mid-activity.
        self.control.set_options(
            activity_min_seconds=0.5 if quick else 1.0, timeout_hold_seconds=30
        )
        self._serial = 0
        self.baseline_calls = 0

    @property
    def database_path(self) -> Path:
        return self.home / "bench.sqlite3"

    def log(self, what: str) -> Path:
        self._logs += 1
        return self.home / f"{self._logs:03d}-{what}.log"

    def child_env(self, **extra: str) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(PORTAL_VARIABLES)}
        return {**inherited, **self.env, **extra}

    def scenario(self, name: str, *, refresh_mode: str = "long_lived") -> Scenario:
        from integrations.services.keys import api_key_create
        from integrations.services.oauth import connect_complete, connect_start

        self._serial += 1
        client_id = f"faults-{self._serial:02d}-{name}"
        self.control.register_client(
            client_id,
            redirect_uris=[REDIRECT_URI],
            client_secret=SECRET,
            refresh_mode=refresh_mode,
        )
        api_key = api_key_create(
            name=f"Faults {name}",
            client_id=client_id,
            client_secret=SECRET,
            redirect_uri=REDIRECT_URI,
        )
        cc_account = self.control.create_account(f"{client_id}@example.com", name=name)
        cc_list = self.control.seed_list(cc_account, "Members")
        session: dict = {}
        url = connect_start(session=session, api_key=api_key)
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        code = self.control.authorize(
            client_id,
            query["redirect_uri"],
            query["scope"],
            query["state"],
            code_challenge=query.get("code_challenge"),
            account=cc_account,
        )
        account = connect_complete(
            session=session, params={"code": code, "state": query["state"]}
        ).account
        return Scenario(self, name, client_id, cc_account, cc_list.list_id, account)

    def close(self) -> None:
        self.sandbox.stop()
        shutil.rmtree(self.home, ignore_errors=True)


def wait_for(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until truthy; None after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None

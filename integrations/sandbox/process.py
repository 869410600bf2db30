"""Run the sandbox as a child process, and prepare it for ``make run``.

* :func:`start_sandbox` launches ``manage.py run_sandbox``, reads the ``SANDBOX_URL=`` line,
  waits until the sandbox answers and returns a :class:`SandboxProcess` (also a context
  manager) with a ready :class:`~integrations.sandbox.control.SandboxControl`.
* :func:`sandbox_prepare_for_portal` makes a freshly started sandbox usable by the portal: the
  "Sandbox app" API key exists in the portal and is registered in the sandbox with the same
  secret, and a demo CC account has lists and contacts. It is the only sandbox code that touches
  Django models, and it imports them inside the function.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO, Any, TextIO

import requests

from integrations.sandbox.control import SandboxControl, SandboxControlError

BASE_DIR = Path(__file__).resolve().parent.parent.parent
URL_PREFIX = "SANDBOX_URL="

SANDBOX_CLIENT_ID = "sandbox-client"
SANDBOX_APP_NAME = "Sandbox app"
DEMO_ACCOUNT_EMAIL = "demo@example.com"
# (name, first contact number, size): overlapping lists over 340 demo contacts.
DEMO_LISTS = (("Newsletter", 1, 240), ("Customers", 181, 120), ("Event attendees", 281, 60))


class SandboxStartError(RuntimeError):
    """The sandbox process did not come up; the message includes its last output."""


class SandboxProcess:
    """A running sandbox child process. ``stop()`` ends it (SIGTERM, then kill)."""

    def __init__(self, popen: subprocess.Popen[str], url: str, output: deque[str]) -> None:
        self.popen = popen
        self.url = url
        self.control = SandboxControl(url)
        self._output = output
        self._config_file: str | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        """The last lines the process printed (stdout and stderr)."""
        return "\n".join(self._output)

    def stop(self, timeout: float = 10.0) -> int:
        """Stop the sandbox and return its exit status; safe to call twice."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=timeout)
        if self._config_file:
            Path(self._config_file).unlink(missing_ok=True)
            self._config_file = None
        return self.popen.returncode

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _pump(stream: IO[str], output: deque[str], lines: queue.Queue[str] | None) -> None:
    for line in stream:
        line = line.rstrip("\n")
        output.append(line)
        if lines is not None:
            lines.put(line)


def start_sandbox(
    port: int = 0,
    config: dict[str, Any] | None = None,
    extra_env: dict[str, str] | None = None,
    *,
    timeout: float = 20.0,
) -> SandboxProcess:
    """Start ``manage.py run_sandbox --port PORT`` and return once it answers.

    ``config`` is written to a temporary ``--config`` file (removed on ``stop()``). Raises
    SandboxStartError, with the process's output, if it exits or does not answer in time.
    """
    argv = [sys.executable, str(BASE_DIR / "manage.py"), "run_sandbox", "--port", str(port)]
    config_file = None
    if config is not None:
        handle, config_file = tempfile.mkstemp(prefix="cc-sandbox-", suffix=".json")
        with os.fdopen(handle, "w") as stream:
            json.dump(config, stream)
        argv += ["--config", config_file]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    popen = subprocess.Popen(
        argv,
        cwd=BASE_DIR,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    output: deque[str] = deque(maxlen=200)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_pump, args=(popen.stdout, output, lines), daemon=True).start()
    threading.Thread(target=_pump, args=(popen.stderr, output, None), daemon=True).start()
    deadline = time.monotonic() + timeout
    url = None
    while url is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or popen.poll() is not None:
            popen.kill()
            raise SandboxStartError("the sandbox did not start:\n" + "\n".join(output))
        try:
            line = lines.get(timeout=min(remaining, 0.2))
        except queue.Empty:
            continue
        if line.startswith(URL_PREFIX):
            url = line[len(URL_PREFIX) :].strip()
    process = SandboxProcess(popen, url, output)
    process._config_file = config_file
    if not _wait_until_answers(url, deadline - time.monotonic()):
        process.stop()
        raise SandboxStartError(
            "the sandbox printed its URL but does not answer:\n" + process.output()
        )
    return process


def _wait_until_answers(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + max(timeout, 0.0)
    while True:
        try:
            if requests.get(f"{url}/__sandbox/health", timeout=1).ok:
                return True
        except requests.RequestException:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def sandbox_prepare_for_portal(*, sandbox_url: str, portal_url: str, stdout: TextIO) -> None:
    """Make the just-started sandbox ready for the portal at ``portal_url``; idempotent.

    Waits up to 15 s for the sandbox. Ensures the portal has the "Sandbox app" key (created
    once with a random secret; later runs read the secret back), registers that client in the
    sandbox (which forgets everything on restart) with the same secret and redirect URI, and
    seeds a demo account with a few lists and a few hundred contacts.
    """
    from integrations.models import ApiKey
    from integrations.services.keys import api_key_create

    if not _wait_until_answers(sandbox_url, 15.0):
        raise SandboxStartError(f"the sandbox at {sandbox_url} did not answer within 15 s")
    expected_redirect = f"{portal_url.rstrip('/')}/accounts/callback/"
    key = ApiKey.objects.filter(client_id=SANDBOX_CLIENT_ID).first()
    if key is None:
        key = api_key_create(
            name=SANDBOX_APP_NAME,
            client_id=SANDBOX_CLIENT_ID,
            client_secret=secrets.token_urlsafe(32),
            redirect_uri=expected_redirect,
            tier="standard",
        )
    # The stored key's URI is what the portal sends; also accept the current portal address.
    redirect_uris = list(dict.fromkeys([key.redirect_uri, expected_redirect]))
    control = SandboxControl(sandbox_url)
    try:
        control.register_client(
            key.client_id,
            client_secret=key.client_secret,
            redirect_uris=redirect_uris,
            name=key.name,
            tier=key.tier if key.tier in ("standard", "partner") else "custom",
            per_second=key.per_second,
            per_day=key.per_day,
        )
        account = control.create_account(DEMO_ACCOUNT_EMAIL, name="Demo Company")
        summary = control.account(account)
        if not summary["contact_lists"]:
            for name, start, size in DEMO_LISTS:
                contact_list = control.seed_list(account, name)
                control.seed_contacts(
                    account,
                    count=size,
                    start=start,
                    list_ids=[contact_list.list_id],
                    email_template="demo.contact{n}@example.com",
                    unsubscribed_every=25,
                )
            summary = control.account(account)
    except SandboxControlError as error:
        raise SandboxStartError(f"could not prepare the sandbox: {error}") from None
    stdout.write(
        f"Sandbox ready at {sandbox_url}: API key {key.client_id!r}, CC account "
        f"{DEMO_ACCOUNT_EMAIL} ({len(summary['contact_lists'])} lists, "
        f"{summary['contacts']} contacts).\n"
    )

"""Run the sandbox as a child process.

:func:`start_sandbox` launches ``manage.py run_sandbox``, reads the ``SANDBOX_URL=`` line, waits
until the sandbox answers and returns a :class:`SandboxProcess` (also a context manager) with a
ready :class:`~integrations.sandbox.control.SandboxControl`. :func:`wait_until_answers` waits
for a sandbox started elsewhere.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO, Any

import requests

from integrations.sandbox.control import SandboxControl

BASE_DIR = Path(__file__).resolve().parent.parent.parent
URL_PREFIX = "SANDBOX_URL="


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
    if not wait_until_answers(url, deadline - time.monotonic()):
        process.stop()
        raise SandboxStartError(
            "the sandbox printed its URL but does not answer:\n" + process.output()
        )
    return process


def wait_until_answers(url: str, timeout: float) -> bool:
    """True once the sandbox at ``url`` answers its health check, False after ``timeout`` s."""
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

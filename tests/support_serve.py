"""Start ``manage.py serve_portal`` as a real process and look at what it started: free ports,
``manage.py`` runs against the same environment, and the process tree from /proc."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        if re.search(rf"^PPid:\s+{pid}$", text, re.MULTILINE):
            found.append(int(status.parent.name))
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``: its children, theirs (gunicorn's workers), and so on."""
    found = []
    for child in children(pid):
        found += [child, *descendants(child)]
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def manage(env: dict[str, str], *args: str) -> str:
    """``manage.py *args`` in ``env``; its stdout, once it exited 0."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def serve_portal_started(
    env: dict[str, str], log: Path, *args: str, port: int, within: float = 120
) -> subprocess.Popen:
    """``manage.py serve_portal *args`` writing to ``log``, once it printed its URL and
    ``port`` answers (the test fails with the log's end if it exits or ``within`` passes)."""
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "manage.py", "serve_portal", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + within
    while "ccportal is running at" not in log.read_text() or not port_open(port):
        if server.poll() is not None or time.monotonic() > deadline:
            if server.poll() is None:
                server.terminate()  # it stops what it started
                server.wait(timeout=60)
            raise AssertionError(log.read_text()[-3000:])
        time.sleep(0.2)
    return server


def wait_until(condition, *, within: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``within`` seconds (a
    bound a slow machine stays far inside, not a measurement)."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)

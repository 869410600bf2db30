"""``serve_portal --production`` as an operator runs it: the production profile on a fresh
database, gunicorn and a db_worker as real processes, static files collected and served by
WhiteNoise; a worker that dies comes back; SIGTERM stops the whole tree and exits 0. And
``gunicorn.conf.py`` read under a given environment."""

from __future__ import annotations

import os
import re
import runpy
import signal
import socket
from pathlib import Path
from unittest import mock

import pytest
import requests
from cryptography.fernet import Fernet

from tests.support_procs import fresh_portal_env
from tests.support_serve import (
    ROOT,
    alive,
    descendants,
    free_port,
    manage,
    port_open,
    serve_portal_started,
    wait_until,
)

GUNICORN_CONFIG = ROOT / "gunicorn.conf.py"


@pytest.fixture
def production_env(tmp_path):
    """The production profile on the sandbox (no Constant Contact credentials), over plain
    HTTP on loopback, with every file it writes under ``tmp_path``."""
    return fresh_portal_env(
        tmp_path / "var",
        DJANGO_ENV="production",
        CC_MODE="sandbox",
        SECRET_KEY="x" * 20 + Fernet.generate_key().decode(),
        FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="false",
        DATABASE_URL=f"sqlite:///{tmp_path / 'portal.sqlite3'}",
        STATIC_ROOT=str(tmp_path / "static"),
        LOG_LEVEL="WARNING",
    )


def _heartbeat_workers(env: dict[str, str]) -> list[str]:
    code = (
        "from integrations.models import WorkerHeartbeat;"
        "print(*WorkerHeartbeat.objects.values_list('worker', flat=True))"
    )
    return manage(env, "shell", "-c", code).split()


def _started_pid(log: Path, name: str, *, after: str = "started") -> int | None:
    found = re.findall(rf"^{after} {name}: pid (\d+)$", log.read_text(), re.MULTILINE)
    return int(found[-1]) if found else None


@pytest.mark.slow
def test_production_serves_with_gunicorn_and_a_worker_restarts_the_dead_and_stops_on_sigterm(
    production_env, tmp_path
):
    env = production_env
    web_port, sandbox_port = free_port(), free_port()
    manage(env, "migrate", "--noinput", "-v", "0")
    log = tmp_path / "serve.log"
    server = serve_portal_started(
        env,
        log,
        "--production",
        "--web-workers",
        "1",
        "--task-workers",
        "1",
        "--port",
        str(web_port),
        "--sandbox-port",
        str(sandbox_port),
        port=web_port,
    )
    portal = f"http://127.0.0.1:{web_port}"
    try:
        banner = log.read_text()
        assert f"ccportal is running at {portal}/ (sandbox mode, production)" in banner
        assert (tmp_path / "static" / "ccportal" / "portal.css").exists(), "collectstatic ran"
        tree = descendants(server.pid)
        web = _started_pid(log, "web")
        assert "gunicorn" in Path(f"/proc/{web}/cmdline").read_text()
        assert len(descendants(web)) == 1, "gunicorn's one worker"

        login = requests.get(f"{portal}/login/", timeout=30)
        assert login.status_code == 200
        assert 'href="/static/ccportal/portal.css"' in login.text
        # gunicorn has no static handler, and Django serves none with DEBUG off: WhiteNoise,
        # from what collectstatic copied.
        served = requests.get(f"{portal}/static/ccportal/portal.css", timeout=30)
        assert served.status_code == 200 and "text/css" in served.headers["Content-Type"]
        assert served.content == (ROOT / "static" / "ccportal" / "portal.css").read_bytes()

        worker = _started_pid(log, "worker-1")
        me = socket.gethostname()
        wait_until(
            lambda: f"{me}:{worker}" in _heartbeat_workers(env),
            within=90,
            what=f"db_worker {worker} never took its heartbeat task",
        )

        os.kill(worker, signal.SIGKILL)
        wait_until(
            lambda: _started_pid(log, "worker-1", after="restarted") is not None,
            within=90,
            what=f"worker-1 was not restarted:\n{log.read_text()[-2000:]}",
        )
        assert "the worker-1 process (pid" in log.read_text()
        assert "was killed by SIGKILL; restarting it in" in log.read_text()
        replacement = _started_pid(log, "worker-1", after="restarted")
        wait_until(
            lambda: f"{me}:{replacement}" in _heartbeat_workers(env),
            within=90,
            what=f"the restarted db_worker {replacement} never took its heartbeat task",
        )
        tree = descendants(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        returncode = server.wait(timeout=120)
    assert returncode == 0, log.read_text()[-3000:]
    assert "SIGTERM: stopping..." in log.read_text()
    # Everything it started, gunicorn's worker included, stopped with it.
    assert len(tree) >= 4, "sandbox, worker, gunicorn and its worker"
    wait_until(
        lambda: not any(alive(pid) for pid in tree),
        within=30,
        what="a process outlived serve_portal",
    )
    assert not port_open(web_port) and not port_open(sandbox_port)


def _gunicorn_settings(**env: str) -> dict:
    names = ("GUNICORN_", "PORT", "FORWARDED_ALLOW_IPS")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(names)}
    with mock.patch.dict(os.environ, {**clean, **env}, clear=True):
        return runpy.run_path(str(GUNICORN_CONFIG))


def test_gunicorn_config_reads_workers_threads_bind_and_proxies_from_the_environment():
    default = _gunicorn_settings()
    assert (default["worker_class"], default["workers"], default["threads"]) == ("gthread", 2, 32)
    assert default["bind"] == "127.0.0.1:8000"
    assert default["graceful_timeout"] < default["timeout"]

    tuned = _gunicorn_settings(
        GUNICORN_WORKERS="5",
        GUNICORN_THREADS="8",
        GUNICORN_BIND="unix:/run/ccportal.sock",
        GUNICORN_TIMEOUT="300",
        GUNICORN_GRACEFUL_TIMEOUT="45",
        FORWARDED_ALLOW_IPS="10.0.0.5",
    )
    assert (tuned["workers"], tuned["threads"], tuned["bind"]) == (5, 8, "unix:/run/ccportal.sock")
    assert (tuned["timeout"], tuned["graceful_timeout"]) == (300, 45)
    assert tuned["forwarded_allow_ips"] == "10.0.0.5"

    assert _gunicorn_settings(PORT="9000")["bind"] == "0.0.0.0:9000"
    assert _gunicorn_settings(GUNICORN_WORKERS="")["workers"] == 2, "empty is the default"


def test_every_environment_variable_gunicorn_config_reads_is_documented():
    source = GUNICORN_CONFIG.read_text()
    read = set(re.findall(r'_setting\("([A-Z][A-Z0-9_]*)"', source))
    documented = set(
        re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M)
    )
    assert len(read) >= 6, "the pattern no longer finds the config's variables"
    assert read - documented == set()

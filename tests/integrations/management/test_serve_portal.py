"""``make run``'s server as a newcomer meets it: a fresh database, ``serve_portal`` starting the
sandbox, a worker and the web server as real processes; Connect; then ``cc_request`` and
``cc_usage`` from another shell; SIGTERM stops everything."""

from __future__ import annotations

import json
import re
import signal
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from integrations.sandbox.control import SandboxControl
from tests.support_procs import fresh_portal_env
from tests.support_serve import (
    alive,
    children,
    free_port,
    manage,
    port_open,
    serve_portal_started,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def fresh_env(tmp_path):
    return fresh_portal_env(
        tmp_path / "var",
        DJANGO_ENV="development",
        DATABASE_URL=f"sqlite:///{tmp_path / 'portal.sqlite3'}",
        LOG_LEVEL="WARNING",
    )


def test_serve_portal_runs_sandbox_worker_and_web_that_connect_and_answer_the_cli(
    fresh_env, tmp_path
):
    env = fresh_env
    web_port, sandbox_port = free_port(), free_port()
    manage(env, "migrate", "--noinput", "-v", "0")
    login = manage(env, "ensure_staff_login")
    password = re.search(r"password: (\S+)", login).group(1)

    log = tmp_path / "serve.log"
    server = serve_portal_started(
        env, log, "--port", str(web_port), "--sandbox-port", str(sandbox_port), port=web_port
    )
    portal = f"http://127.0.0.1:{web_port}"
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    try:
        banner = log.read_text()
        assert f"{portal}/" in banner and f"CC_SANDBOX_URL={sandbox_url}" in banner

        browser = requests.Session()
        browser.get(f"{portal}/login/")
        browser.post(
            f"{portal}/login/",
            data={
                "username": "admin",
                "password": password,
                "csrfmiddlewaretoken": browser.cookies["csrftoken"],
            },
            headers={"Referer": f"{portal}/login/"},
        )
        accounts = browser.get(f"{portal}/accounts/").text
        connect_path = re.search(r'action="(/keys/\d+/connect/)"', accounts).group(1)
        started = browser.post(
            portal + connect_path,
            data={"csrfmiddlewaretoken": browser.cookies["csrftoken"]},
            headers={"Referer": f"{portal}/accounts/"},
            allow_redirects=False,
        )
        authorize = started.headers["Location"]
        assert authorize.startswith(f"{sandbox_url}/oauth2/default/v1/authorize?"), authorize
        query = {k: v[0] for k, v in parse_qs(urlsplit(authorize).query).items()}
        code = SandboxControl(sandbox_url).authorize(
            query["client_id"], query["redirect_uri"], query["scope"], query["state"]
        )
        done = browser.get(
            f"{portal}/accounts/callback/",
            params={"code": code, "state": query["state"]},
            allow_redirects=False,
        )
        assert done.status_code == 302 and re.fullmatch(r"/accounts/\d+/", done.headers["Location"])

        cli = {**env, "CC_SANDBOX_URL": sandbox_url}
        lists = json.loads(manage(cli, "cc_request", "GET", "/contact_lists"))
        assert len(lists["lists"]) >= 1
        usage = json.loads(manage(cli, "cc_usage", "--json"))
        # The connect's account summary and the cc_request.
        assert [row["calls_today"] for row in usage] == [2]
        child_pids = children(server.pid)
        assert len(child_pids) == 3, "sandbox, worker and web server"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    # Everything it started stopped with it.
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in child_pids):
        assert time.monotonic() < deadline, "a child outlived serve_portal"
        time.sleep(0.2)
    assert not port_open(web_port) and not port_open(sandbox_port)

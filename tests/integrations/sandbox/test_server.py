"""The sandbox's HTTP/1.1 server: keep-alive, chunked request bodies, explicit close."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from integrations.sandbox.app import SandboxApp
from integrations.sandbox.server import SandboxServer
from integrations.sandbox.state import Sandbox


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    server = SandboxServer(("127.0.0.1", 0), SandboxApp(Sandbox()))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_connections_are_kept_alive_across_requests(server: SandboxServer):
    connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=5)
    sockets = []
    for _ in range(3):
        connection.request("GET", "/__sandbox/health")
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Connection") is None
        response.read()
        sockets.append(connection.sock)
    assert sockets[0] is sockets[1] is sockets[2]
    connection.close()


def test_connection_close_is_honoured(server: SandboxServer):
    response = requests.get(
        f"{server.url}/__sandbox/health", headers={"Connection": "close"}, timeout=5
    )
    assert (response.status_code, response.headers["Connection"]) == (200, "close")


def test_chunked_request_bodies_are_read(server: SandboxServer):
    def body() -> Iterator[bytes]:
        yield b'{"email": "chunked'
        yield b'@example.com"}'

    response = requests.post(f"{server.url}/__sandbox/accounts", data=body(), timeout=5)
    assert response.status_code == 201
    assert response.json()["email"] == "chunked@example.com"


def _refused(url: str) -> bool:
    try:
        requests.get(url, timeout=1)
    except requests.ConnectionError:
        return True
    return False


def _within(seconds: float, condition) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_an_outage_refuses_connections_then_serves_again_on_the_same_port():
    sandbox = Sandbox()
    server = SandboxServer(("127.0.0.1", 0), SandboxApp(sandbox))
    sandbox.faults.outage_starter = server.start_outage
    thread = threading.Thread(target=server.serve, kwargs={"poll_interval": 0.05})
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/__sandbox/health"
    try:
        kept = requests.Session()
        assert kept.get(url, timeout=5).status_code == 200
        outage = requests.post(
            f"http://127.0.0.1:{server.server_port}/__sandbox/faults/outage",
            json={"seconds": 600.0},  # ended below, so a slow machine cannot outlast it
            timeout=5,
        )
        assert outage.status_code == 202
        # The outage begins a moment after its answer, however busy the machine is.
        assert _within(30, lambda: _refused(url)), "the outage never began"
        # Kept-alive connections are shut too: nothing is served during the outage.
        with pytest.raises(requests.ConnectionError):
            kept.get(url, timeout=1)
        server.end_outage()
        assert _within(30, lambda: not _refused(url)), "the sandbox never served again"
        assert requests.get(url, timeout=5).status_code == 200
        assert sandbox.faults.injected_counts() == {"outage": 1}
    finally:
        server.stop()
        thread.join(timeout=5)
        server.server_close()

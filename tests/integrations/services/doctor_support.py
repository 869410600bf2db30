"""What the doctor's tests share: a stand-in for CC's endpoints and a portal in good health.

:func:`cc_stub_serving` runs a tiny HTTP server on 127.0.0.1 (a thread, so the fast tier may
use it) that answers every CC endpoint the doctor probes, with a ``Date`` header ``offset``
seconds off this host's clock. :func:`portal_in_health` adds a key, a connected account used
today and a fresh worker heartbeat.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.utils import timezone

from integrations.constant_contact import endpoints
from integrations.models import ConnectedAccount
from integrations.services.workers import worker_beat
from tests.factories import ApiKeyFactory, ConnectedAccountFactory

#: A Redis password that must never be printed.
REDIS_PASSWORD = "doctor-redis-pw-7f3a"


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class CCStub(ThreadingHTTPServer):
    """CC's endpoints as far as the doctor looks: the JWKS answers 200 with no keys, every other
    path 401; each answer's ``Date`` header is ``offset`` seconds from this host's clock."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _StubHandler)
        self.offset = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _StubHandler(BaseHTTPRequestHandler):
    server: CCStub

    def do_GET(self) -> None:
        if self.path == endpoints.JWKS_PATH:
            status, body = HTTPStatus.OK, {"keys": []}
        else:
            status, body = HTTPStatus.UNAUTHORIZED, {"error_key": "unauthorized"}
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def date_time_string(self, timestamp: float | None = None) -> str:
        moment = time.time() if timestamp is None else timestamp
        return formatdate(moment + self.server.offset, usegmt=True)

    def log_message(self, format: str, *args) -> None:
        pass


def point_cc_at(settings, base_url: str) -> None:
    """Every CC endpoint setting at ``base_url``, laid out as the sandbox's."""
    settings.CC_MODE = "sandbox"
    settings.CC_SANDBOX_URL = base_url
    settings.CC_AUTHORIZE_URL = base_url + endpoints.AUTHORIZE_PATH
    settings.CC_TOKEN_URL = base_url + endpoints.TOKEN_PATH
    settings.CC_API_BASE_URL = base_url + endpoints.API_PATH
    settings.CC_JWKS_URL = base_url + endpoints.JWKS_PATH


@contextmanager
def cc_stub_serving(settings) -> Iterator[CCStub]:
    """A :class:`CCStub` answering in a thread, with every CC endpoint setting pointing at it."""
    server = CCStub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    point_cc_at(settings, server.url)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def used_today(**fields) -> ConnectedAccount:
    """A connected account whose refresh token was used a moment ago."""
    now = timezone.now()
    return ConnectedAccountFactory(
        refresh_token_issued_at=now - dt.timedelta(days=2),
        refresh_token_last_used_at=now,
        **fields,
    )


def portal_in_health() -> ConnectedAccount:
    """A key ("Acme app") with one account in use ("owner@example.com") and a worker that has
    just beaten; with :func:`cc_stub_serving`, every check passes."""
    key = ApiKeyFactory(name="Acme app")
    worker_beat()
    return used_today(api_key=key, label="owner@example.com")


def redis_down_settings(settings) -> str:
    """The quota store and the cache on a Redis that does not answer, with a password in its
    URL; returns the URL."""
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{closed_port()}/0"
    settings.REDIS_URL = url
    settings.CC_QUOTA_STORE = "integrations.services.quota_stores.RedisStore"
    settings.CC_QUOTA_STORE_TIMEOUT = 0.3
    settings.CACHES = {
        "default": {
            "BACKEND": "ccportal.cache.FailoverCache",
            "OPTIONS": {"PRIMARY": "redis", "FALLBACK": "database"},
        },
        "redis": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "OPTIONS": {"socket_connect_timeout": 0.3, "socket_timeout": 0.3},
        },
        "database": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "ccportal_cache",
        },
    }
    return url

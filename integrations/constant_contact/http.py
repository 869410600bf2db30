"""The one factory for HTTP sessions to Constant Contact: timeouts bound here, no hidden retries.

Retries are the gateway's decision (each retry must book a new rate-limit slot), so urllib3
is told never to retry on its own. Every caller (the gateway, the token endpoint, the JWKS
fetch) takes its session from :func:`shared_session`.
"""

from __future__ import annotations

import functools
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
USER_AGENT = "ccportal/0.1"


class _TimeoutSession(requests.Session):
    def __init__(self, timeout: tuple[float, float]) -> None:
        super().__init__()
        self.timeout = timeout

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, **kwargs)


def session_create(
    *, connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT
) -> requests.Session:
    """A session with (connect, read) timeouts on every request and zero automatic retries."""
    session = _TimeoutSession((connect_timeout, read_timeout))
    adapter = HTTPAdapter(max_retries=Retry(total=0, read=False), pool_maxsize=32)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


@functools.lru_cache(maxsize=8)
def shared_session(
    *, connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT
) -> requests.Session:
    """This process's session for these timeouts: one connection pool, kept alive between
    calls (a fresh TLS handshake per call would make every call arrive late)."""
    return session_create(connect_timeout=connect_timeout, read_timeout=read_timeout)

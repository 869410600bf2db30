"""The WSGI application's two doors: pages through the whole middleware stack, ``/proxy/``
through the view alone."""

from __future__ import annotations

import io
import json
from http import HTTPStatus
from wsgiref.util import setup_testing_defaults

import pytest
from django.core.handlers.wsgi import WSGIHandler

from ccportal import wsgi


def _serve(path: str, host: str = "127.0.0.1", **headers: str) -> tuple[int, dict[str, str], bytes]:
    environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO(b"")}
    environ.update({f"HTTP_{name.upper()}": value for name, value in headers.items()})
    setup_testing_defaults(environ)
    environ["HTTP_HOST"] = host
    started: dict = {}

    def start_response(status, response_headers, exc_info=None):
        started["status"] = int(status.split()[0])
        started["headers"] = {name.lower(): value for name, value in response_headers}

    answer = wsgi.application(environ, start_response)
    try:
        body = b"".join(answer)
    finally:
        getattr(answer, "close", lambda: None)()
    return started["status"], started["headers"], body


@pytest.mark.django_db
def test_a_proxy_request_skips_the_portals_middleware():
    status, headers, body = _serve("/proxy/v3/contact_lists", Authorization="Bearer nope")

    assert status == HTTPStatus.UNAUTHORIZED
    assert json.loads(body)["error_key"] == "unauthorized"
    assert int(headers["content-length"]) == len(body)
    # Set by the clickjacking, session and CSRF middleware on every page; never here.
    assert "x-frame-options" not in headers
    assert "cookie" not in headers.get("vary", "").lower()
    # SecurityMiddleware's headers stay.
    assert headers["x-content-type-options"] == "nosniff"


@pytest.mark.django_db
def test_a_proxy_request_for_a_host_not_allowed_is_refused_before_anything_is_read(monkeypatch):
    def unreachable(authorization: str):
        raise AssertionError("the token was looked up")

    monkeypatch.setattr("integrations.views.proxy.proxy_token_authenticate", unreachable)
    status, _, body = _serve(
        "/proxy/v3/contact_lists", host="evil.example", Authorization="Bearer x"
    )

    assert status == HTTPStatus.BAD_REQUEST
    assert json.loads(body)["error_key"] == "bad_request"


@pytest.mark.django_db
def test_plain_http_redirects_pages_and_is_refused_by_the_proxy(settings, monkeypatch):
    settings.SECURE_SSL_REDIRECT = True
    # SecurityMiddleware reads its settings when the handlers are made: make them again.
    monkeypatch.setattr(wsgi, "portal", WSGIHandler())
    monkeypatch.setattr(wsgi, "proxy", wsgi.ProxyHandler())

    page, headers, _ = _serve("/login/")
    proxied, _, body = _serve("/proxy/v3/contact_lists", Authorization="Bearer x")

    assert page == HTTPStatus.MOVED_PERMANENTLY and headers["location"].startswith("https://")
    assert proxied == HTTPStatus.FORBIDDEN
    assert json.loads(body)["error_key"] == "https_required"


@pytest.mark.django_db
def test_a_page_goes_through_the_whole_stack():
    status, headers, _ = _serve("/login/")

    assert status == HTTPStatus.OK
    assert headers["x-frame-options"] == "DENY"
    assert "csrftoken" in headers.get("set-cookie", "")


@pytest.mark.django_db
def test_a_failure_in_the_proxy_is_djangos_500_not_an_exception_out_of_the_door(monkeypatch):
    def broken(authorization: str):
        raise RuntimeError("the token store fell over")

    monkeypatch.setattr("integrations.views.proxy.proxy_token_authenticate", broken)
    status, _, body = _serve("/proxy/v3/contact_lists", Authorization="Bearer ccp_x")

    assert status == HTTPStatus.INTERNAL_SERVER_ERROR
    assert b"the token store fell over" not in body

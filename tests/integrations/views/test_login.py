"""One login, limited per address and per username, whichever door it is reached through."""

from __future__ import annotations

from http import HTTPStatus
from unittest import mock

import pytest
from django.contrib.auth import SESSION_KEY
from django.core.cache.backends.base import BaseCache
from django.test import Client
from django.urls import reverse

from tests.factories import PortalUserFactory, StaffFactory

pytestmark = pytest.mark.django_db

LOGIN = "/login/"
ADMIN_LOGIN = "/admin/login/"


def _attempt(path: str, username: str, password: str = "wrong", *, ip: str = "10.0.0.1"):
    client = Client(REMOTE_ADDR=ip)
    return client, client.post(path, {"username": username, "password": password})


def _logged_in(client: Client) -> bool:
    return SESSION_KEY in client.session


def test_a_good_password_logs_in_and_lands_on_the_dashboard():
    PortalUserFactory(username="alice", password="alice-pw-1")
    client, response = _attempt(LOGIN, "alice", "alice-pw-1")
    assert response.status_code == HTTPStatus.FOUND
    assert response.url == reverse("integrations:dashboard")
    assert _logged_in(client)


def test_the_eleventh_attempt_from_one_address_is_refused_whatever_the_username():
    for n in range(10):
        _, response = _attempt(LOGIN, f"guess{n}")
        assert response.status_code == HTTPStatus.OK
    _, refused = _attempt(LOGIN, "someone-else")
    assert refused.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert "Too many login attempts for this address" in refused.content.decode()
    _, elsewhere = _attempt(LOGIN, "someone-else", ip="10.0.0.2")
    assert elsewhere.status_code == HTTPStatus.OK, "another address has its own count"


def test_the_sixth_attempt_for_one_username_is_refused_from_any_address_in_any_spelling():
    PortalUserFactory(username="alice", password="alice-pw-1")
    for n, spelling in enumerate(["alice", "Alice", " ALICE ", "alice ", "aLiCe"]):
        _, response = _attempt(LOGIN, spelling, ip=f"10.0.1.{n}")
        assert response.status_code == HTTPStatus.OK
    with mock.patch("django.contrib.auth.forms.authenticate") as authenticate:
        client, refused = _attempt(LOGIN, "alice", "alice-pw-1", ip="10.0.2.1")
    assert refused.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert "Too many login attempts for this user. Wait a minute" in refused.content.decode()
    authenticate.assert_not_called()  # the password is not even checked
    assert not _logged_in(client)
    _, other = _attempt(LOGIN, "bob", ip="10.0.2.1")
    assert other.status_code == HTTPStatus.OK, "another username has its own count"


def test_the_admins_login_is_the_portals_page():
    response = Client().get(reverse("admin:index"))
    assert response.status_code == HTTPStatus.FOUND
    page = Client().get(response.url)
    assert page.status_code == HTTPStatus.OK
    assert page.templates[0].name == "registration/login.html"
    assert 'name="next" value="/admin/"' in page.content.decode()


def test_the_admins_login_counts_on_the_same_limits():
    StaffFactory(username="root", password="root-pw-1")
    for n in range(5):
        door = LOGIN if n % 2 else ADMIN_LOGIN
        _, response = _attempt(door, "root", ip=f"10.0.3.{n}")
        assert response.status_code == HTTPStatus.OK
    client, refused = _attempt(ADMIN_LOGIN, "root", "root-pw-1", ip="10.0.4.1")
    assert refused.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert not _logged_in(client)
    for n in range(10):
        _attempt(LOGIN if n % 2 else ADMIN_LOGIN, f"guess{n}", ip="10.0.5.1")
    _, per_address = _attempt(ADMIN_LOGIN, "anyone", ip="10.0.5.1")
    assert per_address.status_code == HTTPStatus.TOO_MANY_REQUESTS


def test_logging_in_at_the_admins_door_lands_on_the_admin_and_logging_out_works():
    StaffFactory(username="root", password="root-pw-1")
    client = Client()
    response = client.post(ADMIN_LOGIN, {"username": "root", "password": "root-pw-1"})
    assert response.status_code == HTTPStatus.FOUND
    assert response.url == reverse("admin:index")
    assert client.get(reverse("admin:index")).status_code == HTTPStatus.OK
    assert client.get(ADMIN_LOGIN).url == reverse("admin:index"), "staff go straight in"
    logged_out = client.post(reverse("admin:logout"))
    assert logged_out.status_code in (HTTPStatus.OK, HTTPStatus.FOUND)
    assert not _logged_in(client)
    assert client.get(reverse("admin:index")).status_code == HTTPStatus.FOUND


def test_a_login_that_may_not_enter_the_admin_sees_the_form_not_a_loop():
    client = Client()
    client.force_login(PortalUserFactory(is_staff=False))
    response = client.get(reverse("admin:index"), follow=True)
    assert response.status_code == HTTPStatus.OK
    assert len(response.redirect_chain) == 1
    assert "may not enter the admin" in response.content.decode()


class BrokenCache(BaseCache):
    """A cache whose server does not answer."""

    def __init__(self, location, params):
        super().__init__(params)

    def _down(self, *args, **kwargs):
        raise ConnectionError("Error 111 connecting to redis:6379. Connection refused.")

    add = get = set = incr = delete = touch = has_key = clear = _down


class SilentCache(BaseCache):
    """A cache that answers but keeps nothing (a full or misconfigured server)."""

    def __init__(self, location, params):
        super().__init__(params)

    def add(self, *args, **kwargs):
        return False

    def incr(self, *args, **kwargs):
        raise ValueError("no such key")

    def get(self, key, default=None, version=None):
        return default

    def set(self, *args, **kwargs):
        return None

    def delete(self, *args, **kwargs):
        return False


@pytest.mark.parametrize("backend", ["BrokenCache", "SilentCache"])
def test_a_limiter_that_cannot_count_refuses_the_attempt(settings, backend):
    PortalUserFactory(username="alice", password="alice-pw-1")
    settings.CACHES = {"default": {"BACKEND": f"{__name__}.{backend}"}}
    with mock.patch("django.contrib.auth.forms.authenticate") as authenticate:
        client, response = _attempt(LOGIN, "alice", "alice-pw-1")
    assert response.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert "login limiter is unavailable" in response.content.decode()
    authenticate.assert_not_called()
    assert not _logged_in(client)


def test_a_limiter_switched_to_fail_open_still_refuses(settings):
    settings.CACHES = {"default": {"BACKEND": f"{__name__}.SilentCache"}}
    settings.RATELIMIT_FAIL_OPEN = True
    _, response = _attempt(LOGIN, "alice")
    assert response.status_code == HTTPStatus.SERVICE_UNAVAILABLE

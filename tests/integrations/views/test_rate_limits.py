"""The doors that are rate limited answer a person, not with a traceback or a bare 403."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from django.urls import reverse

from tests.factories import ApiKeyFactory

pytestmark = pytest.mark.django_db

LOCAL_MEMORY = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}


@pytest.fixture(autouse=True)
def counted_in_memory(settings):
    from django.core.cache import cache

    settings.CACHES = LOCAL_MEMORY
    cache.clear()
    yield
    cache.clear()


def test_the_eleventh_login_attempt_in_a_minute_is_turned_away(client):
    url = reverse("login")
    for n in range(10):  # a new username each time: the per-username limit is 5
        response = client.post(url, {"username": f"nobody{n}", "password": "wrong"})
        assert response.status_code == HTTPStatus.OK  # the form again, with its error
    refused = client.post(url, {"username": "somebody", "password": "wrong"})
    assert refused.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert "Too many login attempts" in refused.content.decode()


def test_connect_is_limited_per_user_with_a_page_that_says_so(staff_client):
    key = ApiKeyFactory()
    url = reverse("integrations:connect", args=[key.pk])
    for _ in range(20):
        assert staff_client.post(url).status_code == HTTPStatus.FOUND
    refused = staff_client.post(url)
    assert refused.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert "Too many connect attempts" in refused.content.decode()


def test_the_callback_is_limited_too(staff_client):
    url = reverse("integrations:connect_callback")
    for _ in range(30):
        assert (
            staff_client.get(url, {"state": "x", "code": "y"}).status_code == HTTPStatus.BAD_REQUEST
        )
    assert staff_client.get(url, {"state": "x"}).status_code == HTTPStatus.TOO_MANY_REQUESTS

"""The Tokens page: make a token (shown once, never stored), list and revoke, key managers
only."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from django.test import Client
from django.urls import reverse

from integrations.models import ProxyToken
from integrations.services.proxy_tokens import (
    ProxyTokenRefused,
    proxy_token_authenticate,
    proxy_token_create,
)
from tests.factories import (
    KEY_MANAGERS,
    OPERATORS,
    VIEWERS,
    ConnectedAccountFactory,
    PortalUserFactory,
)

pytestmark = pytest.mark.django_db

PAGE = reverse("integrations:token_list")


def _client(*groups: str) -> Client:
    client = Client()
    client.force_login(PortalUserFactory(groups=list(groups)))
    return client


def test_a_key_manager_makes_a_token_sees_it_once_and_it_works():
    account = ConnectedAccountFactory()
    client = _client(KEY_MANAGERS)

    made = client.post(
        reverse("integrations:token_create"),
        {"name": "wordpress", "accounts": [account.pk], "lane": "background", "expires_days": 30},
    )

    assert made.status_code == HTTPStatus.OK
    assert "no-store" in made["Cache-Control"]
    secret = made.context["secret"]
    assert secret.startswith("ccp_") and secret in made.content.decode()
    caller = proxy_token_authenticate(f"Bearer {secret}")
    token = caller.token
    assert (token.name, token.lane) == ("wordpress", "background")
    assert list(token.accounts.all()) == [account] == list(caller.accounts.values())
    assert token.expires_at is not None

    listed = client.get(PAGE).content.decode()
    assert "wordpress" in listed and token.shown in listed
    assert secret not in listed, "never shown again"
    assert 'href="/tokens/"' in listed  # the nav link


def test_a_bad_token_form_is_refused_with_the_reason_and_nothing_is_made():
    account = ConnectedAccountFactory()
    proxy_token_create(name="taken", accounts=[account])
    client = _client(KEY_MANAGERS)

    no_account = client.post(
        reverse("integrations:token_create"), {"name": "x", "lane": "interactive"}
    )
    duplicate = client.post(
        reverse("integrations:token_create"),
        {"name": "taken", "accounts": [account.pk], "lane": "interactive"},
    )

    assert no_account.status_code == duplicate.status_code == HTTPStatus.BAD_REQUEST
    assert "This field is required" in no_account.content.decode()
    assert "A token named &#x27;taken&#x27; exists already." in duplicate.content.decode()
    assert ProxyToken.objects.count() == 1


def test_revoke_stops_the_token_at_once():
    account = ConnectedAccountFactory()
    _, secret = proxy_token_create(name="cron", accounts=[account])

    response = _client(KEY_MANAGERS).post(reverse("integrations:token_revoke", args=["cron"]))

    assert response.status_code == HTTPStatus.FOUND
    with pytest.raises(ProxyTokenRefused):
        proxy_token_authenticate(f"Bearer {secret}")
    assert "revoked" in _client(KEY_MANAGERS).get(PAGE).content.decode()


@pytest.mark.parametrize("groups", [(VIEWERS,), (OPERATORS,)])
def test_only_key_managers_see_or_change_tokens(groups):
    account = ConnectedAccountFactory()
    proxy_token_create(name="cron", accounts=[account])
    client = _client(*groups)

    assert client.get(PAGE).status_code == HTTPStatus.FORBIDDEN
    made = client.post(
        reverse("integrations:token_create"),
        {"name": "sneaky", "accounts": [account.pk], "lane": "interactive"},
    )
    revoked = client.post(reverse("integrations:token_revoke", args=["cron"]))
    assert made.status_code == revoked.status_code == HTTPStatus.FORBIDDEN
    assert list(ProxyToken.objects.values_list("name", "revoked_at")) == [("cron", None)]
    assert 'href="/tokens/"' not in client.get(reverse("integrations:dashboard")).content.decode()

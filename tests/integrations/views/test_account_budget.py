"""The account page's budget card: who sees the form, what a save stores, what bad input gets."""

from __future__ import annotations

import html
from http import HTTPStatus

import pytest
from django.test import Client
from django.urls import reverse

from integrations.models import ConnectedAccount, Tier
from integrations.permissions import OPERATE_PORTAL, refusal_message
from tests.factories import (
    OPERATORS,
    VIEWERS,
    ApiKeyFactory,
    ConnectedAccountFactory,
    PortalUserFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def account() -> ConnectedAccount:
    key = ApiKeyFactory(tier=Tier.CUSTOM, custom_per_second=4, custom_per_day=10_000)
    return ConnectedAccountFactory(api_key=key, organization_name="Acme")


def _client(*groups: str) -> Client:
    client = Client()
    client.user = PortalUserFactory(groups=list(groups))
    client.force_login(client.user)
    return client


@pytest.fixture
def operator() -> Client:
    return _client(OPERATORS)


def _budget(account: ConnectedAccount) -> tuple[int, int | None, float | None]:
    account.refresh_from_db()
    return account.share_weight, account.daily_cap, account.daily_share


def _post(client: Client, account: ConnectedAccount, **data: str):
    return client.post(reverse("integrations:account_budget", args=[account.pk]), data, follow=True)


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_the_page_shows_the_budget_and_an_operator_gets_the_form(account, operator):
    ConnectedAccount.objects.filter(pk=account.pk).update(share_weight=2, daily_cap=100)
    page = operator.get(reverse("integrations:account_detail", args=[account.pk]))
    text = html.unescape(page.content.decode())
    assert "weight 2 · cap 100 calls/day" in text
    assert 'id="budget-form"' in text and "csrfmiddlewaretoken" in text
    form = page.context["budget_form"]
    assert (form["weight"].value(), form["cap"].value(), form["per_day"].value()) == (
        2,
        "calls",
        100,
    )


def test_a_viewer_sees_the_budget_but_no_form(account):
    page = _client(VIEWERS).get(reverse("integrations:account_detail", args=[account.pk]))
    text = html.unescape(page.content.decode())
    assert "weight 1 · no cap" in text
    assert 'id="budget-form"' not in text


@pytest.mark.parametrize("groups", [(), (VIEWERS,)], ids=["no group", "viewer"])
def test_a_staff_login_without_the_operate_permission_is_refused(account, groups):
    client = _client(*groups)
    response = client.post(
        reverse("integrations:account_budget", args=[account.pk]),
        {"weight": "5", "cap": "calls", "per_day": "10"},
    )
    assert response.status_code == HTTPStatus.FORBIDDEN
    if groups:
        page = html.unescape(response.content.decode())
        assert refusal_message(client.user, OPERATE_PORTAL) in page
    assert _budget(account) == (1, None, None)


def test_a_cap_in_calls_and_a_weight_are_stored_and_shown(account, operator):
    response = _post(operator, account, weight="2", cap="calls", per_day="100")
    assert response.redirect_chain == [
        (reverse("integrations:account_detail", args=[account.pk]), HTTPStatus.FOUND)
    ]
    assert _budget(account) == (2, 100, None)
    assert _messages(response) == ["Budget of Acme: weight 2 · cap 100 calls/day."]


def test_a_share_in_percent_replaces_a_cap_in_calls(account, operator):
    ConnectedAccount.objects.filter(pk=account.pk).update(daily_cap=100)
    response = _post(operator, account, weight="1", cap="share", share_percent="20", per_day="100")
    assert _budget(account) == (1, None, 0.2)
    assert "cap 20% of the key's day (2,000 calls)" in _messages(response)[0]


def test_no_cap_clears_both_caps(account, operator):
    ConnectedAccount.objects.filter(pk=account.pk).update(daily_cap=100, daily_share=0.5)
    response = _post(operator, account, weight="3", cap="none", per_day="100")
    assert _budget(account) == (3, None, None)
    assert _messages(response) == ["Budget of Acme: weight 3 · no cap."]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"weight": "0", "cap": "none"},
            "Budget not changed: the weight must be a whole number from 1 to 1000; got 0.",
        ),
        ({"weight": "1001", "cap": "none"}, "from 1 to 1000; got 1001."),
        ({"weight": "abc", "cap": "none"}, "Budget not changed. Weight: Enter a whole number."),
        ({"cap": "none"}, "Weight: This field is required."),
        (
            {"weight": "1", "cap": "calls"},
            "Budget not changed. Calls per day: Give the number of calls per day.",
        ),
        ({"weight": "1", "cap": "calls", "per_day": "0"}, "the daily cap must be a whole number"),
        ({"weight": "1", "cap": "calls", "per_day": "1.5"}, "Enter a whole number."),
        ({"weight": "1", "cap": "share"}, "Give the share of the key's day, in percent."),
        (
            {"weight": "1", "cap": "share", "share_percent": "150"},
            "the daily share must be more than 0 and at most 1",
        ),
        ({"weight": "1", "cap": "share", "share_percent": "0"}, "more than 0"),
        ({"weight": "1", "cap": "share", "share_percent": "nan"}, "Enter a number."),
        ({"weight": "1", "cap": "share", "share_percent": "1e400"}, "Enter a number."),
        ({"weight": "1", "cap": "lots"}, "Daily cap: Select a valid choice."),
    ],
)
def test_bad_input_shows_a_message_and_changes_nothing(account, operator, data, message):
    ConnectedAccount.objects.filter(pk=account.pk).update(share_weight=4, daily_cap=40)
    response = _post(operator, account, **data)
    assert response.status_code == HTTPStatus.OK
    shown = _messages(response)
    assert any(message in line for line in shown), shown
    assert message in html.unescape(response.content.decode()), "on the account page"
    assert _budget(account) == (4, 40, None)


def test_the_form_needs_its_csrf_token(account):
    client = Client(enforce_csrf_checks=True)
    client.force_login(PortalUserFactory(groups=[OPERATORS]))
    response = client.post(
        reverse("integrations:account_budget", args=[account.pk]), {"weight": "2", "cap": "none"}
    )
    assert response.status_code == HTTPStatus.FORBIDDEN
    assert _budget(account) == (1, None, None)


def test_a_get_changes_nothing(account, operator):
    response = operator.get(reverse("integrations:account_budget", args=[account.pk]))
    assert response.status_code == HTTPStatus.METHOD_NOT_ALLOWED


def test_an_unknown_account_is_a_404(operator):
    response = operator.post(
        reverse("integrations:account_budget", args=[404]), {"weight": "2", "cap": "none"}
    )
    assert response.status_code == HTTPStatus.NOT_FOUND

"""An account's weight and daily caps: the budget service's rules and its one-line wording."""

from __future__ import annotations

import logging

import pytest

from integrations.errors import PortalError
from integrations.models import ConnectedAccount, Tier
from integrations.services.budgets import (
    BudgetInvalid,
    account_budget_describe,
    account_budget_set,
    account_budget_validate,
)
from tests.factories import ApiKeyFactory, ConnectedAccountFactory, PortalUserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def account() -> ConnectedAccount:
    key = ApiKeyFactory(tier=Tier.CUSTOM, custom_per_second=4, custom_per_day=10_000)
    return ConnectedAccountFactory(api_key=key)


def _stored(account: ConnectedAccount) -> tuple[int, int | None, float | None]:
    return (
        ConnectedAccount.objects.filter(pk=account.pk)
        .values_list("share_weight", "daily_cap", "daily_share")
        .get()
    )


def test_a_new_account_has_weight_one_and_no_cap(account):
    assert _stored(account) == (1, None, None)
    assert account_budget_describe(account) == "weight 1 · no cap"


def test_set_stores_the_given_values(account):
    account_budget_set(account=account, weight=3, per_day=100)
    assert _stored(account) == (3, 100, None)
    account_budget_set(account=account, per_day=None, share=0.25)
    assert _stored(account) == (3, None, 0.25)


def test_arguments_left_out_keep_their_stored_value(account):
    account_budget_set(account=account, weight=5, share=0.5)
    account_budget_set(account=account, per_day=40)
    assert _stored(account) == (5, 40, 0.5), "weight and share kept"


def test_none_clears_a_cap(account):
    account_budget_set(account=account, per_day=40, share=0.1)
    account_budget_set(account=account, per_day=None, share=None)
    assert _stored(account) == (1, None, None)


def test_set_writes_only_the_budget_columns(account):
    """A token refresh saving the row meanwhile keeps its tokens."""
    stale = ConnectedAccount.objects.get(pk=account.pk)
    ConnectedAccount.objects.filter(pk=account.pk).update(token_version=7, label="renamed")
    account_budget_set(account=stale, weight=2)
    fresh = ConnectedAccount.objects.get(pk=account.pk)
    assert (fresh.token_version, fresh.label, fresh.share_weight) == (7, "renamed", 2)


def test_set_with_nothing_to_change_writes_nothing(account, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert account_budget_set(account=account) is account


@pytest.mark.parametrize(
    ("arguments", "field", "words"),
    [
        ({"weight": 0}, "share_weight", "weight must be a whole number from 1 to 1000"),
        ({"weight": 1001}, "share_weight", "from 1 to 1000; got 1001"),
        ({"weight": None}, "share_weight", "got None"),
        ({"weight": 2.5}, "share_weight", "whole number"),
        ({"weight": True}, "share_weight", "whole number"),
        ({"per_day": 0}, "daily_cap", "daily cap must be a whole number of calls from 1"),
        ({"per_day": -5}, "daily_cap", "got -5"),
        ({"per_day": 10.5}, "daily_cap", "whole number"),
        ({"per_day": 2**31}, "daily_cap", "from 1 to 2,147,483,647"),
        ({"share": 0}, "daily_share", "more than 0 and at most 1"),
        ({"share": 0.0}, "daily_share", "got 0.0"),
        ({"share": 1.5}, "daily_share", "up to 100% of the key's day"),
        ({"share": -0.1}, "daily_share", "got -0.1"),
        ({"share": float("nan")}, "daily_share", "more than 0"),
        ({"share": float("inf")}, "daily_share", "more than 0"),
        ({"share": "0.2"}, "daily_share", "got '0.2'"),
    ],
)
def test_values_out_of_range_are_refused_by_name_and_nothing_is_written(
    account, arguments, field, words
):
    with pytest.raises(BudgetInvalid, match=words) as refused:
        account_budget_set(account=account, **({"weight": 2} | arguments))
    assert refused.value.field == field
    assert isinstance(refused.value, PortalError), "views and commands show it as one line"
    assert "\n" not in str(refused.value)
    assert _stored(account) == (1, None, None), "no part of the change was written"


@pytest.mark.parametrize(
    "arguments",
    [{"weight": 1}, {"weight": 1000}, {"per_day": 1}, {"share": 1}, {"share": 0.0001}],
)
def test_the_ends_of_each_range_are_allowed(arguments):
    assert account_budget_validate(**arguments)


def test_validate_returns_the_fields_to_store():
    assert account_budget_validate(weight=2, per_day=None) == {
        "share_weight": 2,
        "daily_cap": None,
    }
    assert account_budget_validate(share=1) == {"daily_share": 1.0}
    assert account_budget_validate() == {}


@pytest.mark.parametrize(
    ("arguments", "described"),
    [
        ({"weight": 2, "per_day": 100}, "weight 2 · cap 100 calls/day"),
        ({"per_day": 12_500}, "weight 1 · cap 12,500 calls/day"),
        ({"share": 0.2}, "weight 1 · cap 20% of the key's day (2,000 calls)"),
        ({"share": 0.125}, "weight 1 · cap 12.5% of the key's day (1,250 calls)"),
        (
            {"per_day": 100, "share": 0.2},
            "weight 1 · cap 100 calls/day (the lower of 100 calls and 20% of the key's day)",
        ),
        (
            {"per_day": 5000, "share": 0.2},
            "weight 1 · cap 2,000 calls/day (the lower of 5,000 calls and 20% of the key's day)",
        ),
        ({"weight": 1000}, "weight 1000 · no cap"),
    ],
)
def test_describe_says_the_weight_and_the_cap_in_calls(account, arguments, described):
    account_budget_set(account=account, **arguments)
    assert account_budget_describe(ConnectedAccount.objects.get(pk=account.pk)) == described


def test_a_change_is_logged_with_who_made_it(account, caplog):
    user = PortalUserFactory(username="olga")
    with caplog.at_level(logging.INFO, logger="integrations.services.budgets"):
        account_budget_set(account=account, weight=2, per_day=100, actor=user)
    (record,) = caplog.records
    message = record.getMessage()
    assert f"account {account.pk}" in message and "by olga" in message
    assert "weight 2 · cap 100 calls/day (was weight 1 · no cap)" in message
    assert account.access_token not in message and account.refresh_token not in message


def test_setting_the_same_budget_again_logs_nothing(account, caplog):
    with caplog.at_level(logging.INFO, logger="integrations.services.budgets"):
        account_budget_set(account=account, weight=2)
        caplog.clear()
        account_budget_set(account=account, weight=2)
    assert not caplog.records

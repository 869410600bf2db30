"""What every handler shares: query, cursor and body helpers (in-process), and the
queued-activity cap every activity POST checks (over HTTP)."""

from __future__ import annotations

import pytest
from werkzeug.datastructures import MultiDict
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from integrations.sandbox.api.common import (
    Invalid,
    id_list,
    limit_param,
    next_link,
    query_args,
)
from tests.integrations.sandbox.conftest import World
from tests.integrations.sandbox.swagger import assert_gateway_error


def _request(query: str) -> Request:
    return Request(EnvironBuilder(path="/v3/contacts", query_string=query).get_environ())


def test_a_cursor_carries_every_parameter_and_the_position():
    link = next_link("/v3/contacts", MultiDict({"limit": "5", "status": "active"}), after=7)
    href = link["next"]["href"]
    assert href.startswith("/v3/contacts?cursor=")
    cursor = href.split("cursor=", 1)[1]
    args = query_args(_request(f"cursor={cursor}"))
    assert args.to_dict() == {"limit": "5", "status": "active", "after": "7"}


@pytest.mark.parametrize("cursor", ["%%%", "bad!", "AAAA"])
def test_a_cursor_that_is_not_ours_is_a_validation_error(cursor: str):
    with pytest.raises(Invalid) as refused:
        query_args(_request(f"cursor={cursor}"))
    assert refused.value.reply.status == 400


def test_limits_and_id_lists_are_checked_against_their_maxima():
    assert limit_param(MultiDict(), 500) == 50
    assert limit_param(MultiDict({"limit": "500"}), 500) == 500
    for raw in ("0", "501", "ten"):
        with pytest.raises(Invalid):
            limit_param(MultiDict({"limit": raw}), 500)
    one = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"
    assert id_list([one, one], "list_ids", maximum=2) == [one]  # deduplicated, in order
    with pytest.raises(Invalid):
        id_list([one, one], "list_ids", maximum=1)  # counted before deduplication
    with pytest.raises(Invalid):
        id_list([one, "x"], "list_ids", maximum=2)  # every id must be a UUID


@pytest.mark.slow
def test_a_thousand_queued_activities_per_account_then_429(slow: World):
    cc, api = slow.control, slow.api
    cc.set_options(activity_items_per_second=0.001)  # nothing completes until the clock moves
    target = slow.new_list("Target")
    cc.seed_contacts(slow.account, count=1)
    body = {"source": {"all_active_contacts": True}, "list_ids": [target]}
    for _ in range(1_000):
        assert api.post("/v3/activities/add_list_memberships", json=body).status_code == 201
    refused = api.post("/v3/activities/add_list_memberships", json=body)
    assert_gateway_error(refused, 429, "too_many_requests")
    assert refused.json()["error_message"] == (
        "Too many requests. You exceeded 1,000 queued activities for this user account."
    )
    assert api.post("/v3/activities/contact_exports", json={}).status_code == 429
    other = cc.create_account("other@example.com")  # the cap is per account
    other_api = slow.fresh_api(other)
    assert other_api.post("/v3/activities/contact_exports", json={}).status_code == 201
    cc.advance_clock(1_001)  # the queue drains
    assert api.post("/v3/activities/add_list_memberships", json=body).status_code == 201
    assert cc.account(slow.account)["queued_activities"] == 1

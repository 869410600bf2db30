"""``add_list_memberships`` and ``remove_list_memberships``: how each source resolves, and CC's
limits on contact ids and lists.

Reference: https://developer.constantcontact.com/api_guide/bulk_activities.html
"""

from __future__ import annotations

import uuid

import pytest

from tests.integrations.sandbox.conftest import World, poll
from tests.integrations.sandbox.swagger import assert_api_error

pytestmark = pytest.mark.slow


def test_membership_add_and_remove_by_contact_ids_lists_and_all_active(slow: World):
    cc, api = slow.control, slow.api
    source = slow.new_list("Source")
    target = slow.new_list("Target")
    seeded = cc.seed_contacts(
        slow.account, count=6, list_ids=[source], unsubscribed_every=3, return_ids=True
    )
    ids = seeded.contact_ids

    def run(path: str, source_spec: dict, **extra) -> dict:
        response = api.post(
            f"/v3/activities/{path}", json={"source": source_spec, "list_ids": [target], **extra}
        )
        assert response.status_code == 201, response.text
        cc.advance_clock(5)
        return poll(slow, response.json())

    added = run("add_list_memberships", {"contact_ids": ids[:2]})
    assert added["status"] == {"items_total_count": 2, "items_completed_count": 2, "list_count": 1}
    assert slow.members(target) == {"contact1@example.com", "contact2@example.com"}

    run("remove_list_memberships", {"contact_ids": [ids[0]]})
    assert slow.members(target) == {"contact2@example.com"}

    # Unsubscribed contacts (3 and 6) are never added; exclude applies to list sources.
    run("add_list_memberships", {"list_ids": [source]}, exclude={"contact_ids": [ids[4]]})
    assert slow.members(target) == {f"contact{n}@example.com" for n in (1, 2, 4)}

    run("remove_list_memberships", {"all_active_contacts": True})
    assert slow.members(target) == set()
    run("add_list_memberships", {"all_active_contacts": True})
    assert slow.members(target) == {f"contact{n}@example.com" for n in (1, 2, 4, 5)}


def test_membership_activities_take_500_contact_ids_and_50_lists(world: World):
    targets = [world.new_list(f"T{n}") for n in range(51)]
    ids = [str(uuid.uuid4()) for _ in range(501)]

    def add(source_ids: list[str], list_ids: list[str]):
        return world.api.post(
            "/v3/activities/add_list_memberships",
            json={"source": {"contact_ids": source_ids}, "list_ids": list_ids},
        )

    assert add(ids[:500], targets[:50]).status_code == 201
    assert "at most 500" in assert_api_error(add(ids, targets[:1]), 400)[0]["error_message"]
    assert "at most 50" in assert_api_error(add(ids[:1], targets), 400)[0]["error_message"]

"""Reads of contacts: CC's cursor pagination and the filters the portal relies on."""

from __future__ import annotations

import pytest

from tests.integrations.sandbox.conftest import World

pytestmark = pytest.mark.slow


def walk(world: World, first: str, params: dict) -> list[list[dict]]:
    pages = [world.api.get(first, params=params).json()]
    while "_links" in pages[-1]:
        href = pages[-1]["_links"]["next"]["href"]
        assert href.startswith("/v3/contacts?cursor=")
        pages.append(world.api.get(href).json())
    return [page["contacts"] for page in pages]


def test_cursor_pagination_visits_every_contact_once_in_a_stable_order(people: World):
    pages = walk(people, "/v3/contacts", {"limit": 50})
    assert [len(page) for page in pages] == [50, 50, 30]
    emails = [c["email_address"]["address"] for page in pages for c in page]
    assert len(set(emails)) == 130
    assert emails[:2] == ["contact1@example.com", "contact2@example.com"]


def test_filters_by_list_and_status_carry_through_the_cursor(people: World):
    pages = walk(
        people,
        "/v3/contacts",
        {"lists": people.newsletter, "status": "active", "limit": 40, "include_count": "true"},
    )
    contacts = [c for page in pages for c in page]
    assert len(contacts) == 90  # 120 members, every 4th unsubscribed
    assert all(c["email_address"]["permission_to_send"] != "unsubscribed" for c in contacts)
    first = people.api.get(
        "/v3/contacts",
        params={"lists": people.newsletter, "status": "active", "include_count": "true"},
    ).json()
    assert first["contacts_count"] == 90
    both = people.api.get(
        "/v3/contacts",
        params={
            "lists": f"{people.newsletter},{people.customers}",
            "status": "unsubscribed",
            "limit": 500,
        },
    ).json()["contacts"]
    assert len(both) == 30 + 2


def test_email_lookup_is_case_insensitive_and_includes_memberships(people: World):
    found = people.api.get(
        "/v3/contacts", params={"email": "CONTACT7@example.com", "include": "list_memberships"}
    ).json()["contacts"]
    assert [c["email_address"]["address"] for c in found] == ["contact7@example.com"]
    assert found[0]["list_memberships"] == [people.newsletter]
    contact = people.api.get(
        f"/v3/contacts/{found[0]['contact_id']}", params={"include": "list_memberships"}
    ).json()
    assert contact["list_memberships"] == [people.newsletter]


def test_created_after_selects_only_contacts_created_later(people: World):
    cc, api = people.control, people.api
    cc.advance_clock(60)
    cutoff = cc.now().isoformat().replace("+00:00", "Z")
    cc.advance_clock(60)
    api = people.fresh_api()
    created = api.post(
        "/v3/contacts",
        json={"create_source": "Account", "email_address": {"address": "late@example.com"}},
    )
    assert created.status_code == 201
    late = api.get("/v3/contacts", params={"created_after": cutoff}).json()["contacts"]
    assert [c["email_address"]["address"] for c in late] == ["late@example.com"]

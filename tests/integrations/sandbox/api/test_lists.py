"""Reads of contact lists: lookup by name and membership counts."""

from __future__ import annotations

import pytest

from tests.integrations.sandbox.conftest import World

pytestmark = pytest.mark.slow


def test_list_name_lookup_is_case_insensitive_and_counts_active_members(people: World):
    lists = people.api.get(
        "/v3/contact_lists", params={"name": "customers", "include_membership_count": "active"}
    ).json()["lists"]
    assert [(lst["name"], lst["membership_count"]) for lst in lists] == [("Customers", 8)]

"""``contact_exports``: the selection, the fields, and the CSV download once completed.

Reference: https://developer.constantcontact.com/api_guide/export_contacts.html
"""

from __future__ import annotations

import csv
import io

import pytest

from tests.integrations.sandbox.conftest import World, poll
from tests.integrations.sandbox.swagger import assert_api_error

pytestmark = pytest.mark.slow


def test_export_is_a_csv_with_humanized_headers_and_contact_ids(slow: World):
    cc, api = slow.control, slow.api
    newsletter = slow.new_list("Newsletter")
    seeded = cc.seed_contacts(
        slow.account,
        list_ids=[newsletter],
        contacts=[
            {"email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace"},
            {"email": "bo@example.com", "first_name": "Bo"},
        ],
        return_ids=True,
    )
    cc.seed_contacts(slow.account, contacts=[{"email": "elsewhere@example.com"}])
    response = api.post(
        "/v3/activities/contact_exports",
        json={"list_ids": [newsletter], "fields": ["email_address", "first_name", "last_name"]},
    )
    assert response.status_code == 201
    activity = response.json()
    results = activity["_links"]["results"]["href"]
    assert results == f"/v3/contact_exports/{activity['activity_id']}"

    early = api.get(results)
    body = assert_api_error(early, 404)
    assert "not ready" in body[0]["error_message"]

    cc.advance_clock(1)
    assert poll(slow, activity)["status"] == {"items_total_count": 2, "items_completed_count": 2}
    download = api.get(results, headers={"Accept": "text/csv"})
    assert download.status_code == 200
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert list(rows[0]) == ["Email Address", "First Name", "Last Name", "Contact Id"]
    assert rows == [
        {
            "Email Address": "ada@example.com",
            "First Name": "Ada",
            "Last Name": "Lovelace",
            "Contact Id": seeded.contact_ids[0],
        },
        {
            "Email Address": "bo@example.com",
            "First Name": "Bo",
            "Last Name": "",
            "Contact Id": seeded.contact_ids[1],
        },
    ]


def test_default_export_has_every_field_and_status_filters(slow: World):
    cc, api = slow.control, slow.api
    cc.seed_contacts(slow.account, count=4, unsubscribed_every=2)
    response = api.post("/v3/activities/contact_exports", json={"status": "unsubscribed"})
    cc.advance_clock(1)
    download = api.get(response.json()["_links"]["results"]["href"])
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert [row["Email Address"] for row in rows] == [
        "contact2@example.com",
        "contact4@example.com",
    ]
    assert {"Email Lists", "Created At", "Email Optout Date", "Contact Id"} <= set(rows[0])
    assert all(row["Email Optout Date"] for row in rows)

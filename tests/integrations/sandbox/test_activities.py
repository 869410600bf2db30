"""Bulk activities over real HTTP: progress on the sandbox clock, effects applied once on
completion with CC's import semantics, exports as CSV, and every documented limit."""

from __future__ import annotations

import csv
import io
import json
import uuid

import pytest

from tests.integrations.sandbox.conftest import World
from tests.integrations.sandbox.swagger import assert_api_error, assert_gateway_error

pytestmark = pytest.mark.slow


@pytest.fixture
def slow(world: World) -> World:
    """Activities take 1 s per 10 items of sandbox time, so tests step them with the clock."""
    world.control.set_options(activity_items_per_second=10)
    return world


def poll(world: World, activity: dict) -> dict:
    response = world.api.get(activity["_links"]["self"]["href"])
    assert response.status_code == 200
    return response.json()


def json_import(world: World, rows: list[dict], list_ids: list[str]) -> dict:
    response = world.api.post(
        "/v3/activities/contacts_json_import", json={"import_data": rows, "list_ids": list_ids}
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_progress_rises_on_the_sandbox_clock_and_effects_land_once_at_completion(slow: World):
    target = slow.new_list("Target")
    rows = [{"email": f"p{n}@example.com"} for n in range(20)]  # 2 s of work
    activity = json_import(slow, rows, [target])
    assert (activity["state"], activity["percent_done"]) == ("initialized", 0)
    slow.control.advance_clock(0.5)
    first = poll(slow, activity)
    assert first["state"] == "processing"
    assert 20 <= first["percent_done"] < 50
    assert slow.members(target) == set()
    slow.control.advance_clock(0.5)
    assert first["percent_done"] < poll(slow, activity)["percent_done"] < 100
    slow.control.advance_clock(1.1)
    done = poll(slow, activity)
    assert (done["state"], done["percent_done"]) == ("completed", 100)
    assert {"started_at", "completed_at"} <= set(done)
    assert done["status"] == {
        "items_total_count": 20,
        "person_count": 20,
        "error_count": 0,
        "correctable_count": 0,
        "cannot_add_to_list_count": 0,
    }
    assert len(slow.members(target)) == 20
    assert poll(slow, activity) == done  # nothing moves after completion


def test_activities_start_initialized_for_the_configured_delay(slow: World):
    slow.control.set_options(activity_start_delay_seconds=5)
    target = slow.new_list("Target")
    activity = json_import(slow, [{"email": "a@example.com"}], [target])
    assert poll(slow, activity)["state"] == "initialized"
    assert "started_at" not in poll(slow, activity)
    slow.control.advance_clock(5.05)
    assert poll(slow, activity)["state"] == "processing"


def test_default_speed_completes_a_40000_row_import_in_about_two_seconds(world: World):
    target = world.new_list("Target")
    rows = [{"email": f"c{n}@example.com"} for n in range(40_000)]
    activity = json_import(world, rows, [target])
    world.control.advance_clock(1.0)
    assert poll(world, activity)["state"] == "processing"
    world.control.advance_clock(1.1)
    assert poll(world, activity)["state"] == "completed"
    assert len(world.control.list_members(world.account, target)) == 40_000


def test_json_import_matches_by_email_updates_only_supplied_fields(slow: World):
    cc, api = slow.control, slow.api
    target = slow.new_list("Target")
    cc.seed_contacts(
        slow.account,
        contacts=[
            {"email": "Known@Example.com", "first_name": "Ada", "last_name": "Lovelace"},
            {"email": "gone@example.com", "permission_to_send": "unsubscribed"},
        ],
    )
    activity = json_import(
        slow,
        [
            {"email": "known@example.COM", "last_name": "King", "first_name": ""},
            {"email": "fresh@example.com", "first_name": "Fay", "job_title": "CTO"},
            {"email": "gone@example.com", "first_name": "Gus"},
            {"email": "not-an-email", "first_name": "Bad"},
            {"first_name": "No email"},
        ],
        [target],
    )
    cc.advance_clock(10)
    done = poll(slow, activity)
    assert done["status"]["person_count"] == 5
    assert done["status"]["error_count"] == 2
    assert done["status"]["cannot_add_to_list_count"] == 1
    assert done["activity_errors"] == [
        "import_data[3]: invalid email address 'not-an-email'",
        "import_data[4]: email is required",
    ]
    assert slow.members(target) == {"Known@Example.com", "fresh@example.com"}

    known = api.get("/v3/contacts", params={"email": "known@example.com"}).json()["contacts"][0]
    assert (known["first_name"], known["last_name"]) == ("Ada", "King")
    fresh = api.get("/v3/contacts", params={"email": "fresh@example.com"}).json()["contacts"][0]
    assert fresh["email_address"]["permission_to_send"] == "implicit"
    assert fresh["email_address"]["opt_in_source"] == "Account"
    assert fresh["job_title"] == "CTO"


def test_csv_import_changes_membership_after_completion(slow: World):
    cc = slow.control
    target = slow.new_list("Target")
    other = slow.new_list("Other")
    cc.seed_contacts(
        slow.account, contacts=[{"email": "out@example.com", "permission_to_send": "unsubscribed"}]
    )
    body = "email,first_name,last_name\nann@example.com,Ann,A\nOUT@example.com,Out,\nbad,X,Y\n"
    response = slow.api.post(
        "/v3/activities/contacts_file_import",
        files={"file": ("people.csv", body.encode(), "text/csv")},
        data={"list_ids": f"{target}, {other}"},
    )
    assert response.status_code == 201, response.text
    activity = response.json()
    assert activity["status"]["items_total_count"] == 4  # lines, header included
    assert slow.members(target) == set()
    cc.advance_clock(1)
    done = poll(slow, activity)
    assert done["state"] == "completed"
    assert done["status"]["person_count"] == 3
    assert done["status"]["error_count"] == 1
    assert done["status"]["cannot_add_to_list_count"] == 1
    assert done["activity_errors"] == ["line 4: invalid email address 'bad'"]
    assert slow.members(target) == slow.members(other) == {"ann@example.com"}


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


# --- documented limits -------------------------------------------------------------------------
def test_json_import_takes_40000_contacts_and_refuses_40001(world: World):
    target = world.new_list("Target")
    rows = [{"email": f"c{n}@example.com"} for n in range(40_000)]
    assert json_import(world, rows, [target])["status"]["person_count"] == 40_000
    rows.append({"email": "one-more@example.com"})
    response = world.api.post(
        "/v3/activities/contacts_json_import", json={"import_data": rows, "list_ids": [target]}
    )
    body = assert_api_error(response, 400)
    assert "40,000" in body[0]["error_message"]


def test_json_import_of_4_mb_or_more_is_refused(world: World):
    target = world.new_list("Target")
    rows = [{"email": f"c{n}@example.com", "street": "x" * 200} for n in range(20_000)]
    payload = json.dumps({"import_data": rows, "list_ids": [target]})
    assert len(payload) > 4 * 1024 * 1024
    response = world.api.post(
        "/v3/activities/contacts_json_import",
        data=payload,
        headers={"Content-Type": "application/json"},
    )
    body = assert_api_error(response, 400)
    assert "4 MB" in body[0]["error_message"]


def test_csv_import_limits_are_40000_lines_with_header_and_4_mb(world: World):
    target = world.new_list("Target")

    def upload(text: str):
        return world.api.post(
            "/v3/activities/contacts_file_import",
            files={"file": ("people.csv", text.encode(), "text/csv")},
            data={"list_ids": target},
        )

    lines = ["email"] + [f"c{n}@example.com" for n in range(39_999)]
    assert upload("\n".join(lines)).status_code == 201
    lines.append("one-more@example.com")
    assert "40,000 lines" in assert_api_error(upload("\n".join(lines)), 400)[0]["error_message"]
    big = "email,notes\n" + "".join(f"c{n}@example.com,{'x' * 400}\n" for n in range(11_000))
    assert len(big) > 4 * 1024 * 1024
    assert "4 MB" in assert_api_error(upload(big), 400)[0]["error_message"]


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


def test_activity_listing_filters_by_state_and_forgets_after_ten_days(slow: World):
    cc, api = slow.control, slow.api
    target = slow.new_list("Target")
    json_import(slow, [{"email": "a@example.com"}], [target])
    cc.advance_clock(1)
    running = json_import(slow, [{"email": f"b{n}@example.com"} for n in range(100)], [target])
    listing = api.get("/v3/activities").json()["activities"]
    assert [a["state"] for a in listing] == ["processing", "completed"]  # newest first
    cc.advance_clock(0.5)
    processing = api.get("/v3/activities", params={"state": "processing"}).json()["activities"]
    assert [a["activity_id"] for a in processing] == [running["activity_id"]]
    cc.advance_clock(11 * 86_400)
    api = slow.fresh_api()  # the old access token expired meanwhile
    assert api.get("/v3/activities").json() == {"activities": []}
    assert_api_error(api.get(f"/v3/activities/{running['activity_id']}"), 404)

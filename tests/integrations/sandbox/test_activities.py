"""Bulk activities over real HTTP: progress on the sandbox clock, effects applied once on
completion, and CC's import semantics.

What each activity endpoint accepts and refuses (CC's documented limits), exports, membership
sources and the activity listing are tested beside their modules in ``api/``."""

from __future__ import annotations

import pytest

from tests.integrations.sandbox.conftest import World, json_import, poll

pytestmark = pytest.mark.slow


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


def test_import_field_lengths_follow_ccs_table(slow: World):
    """``JsonImportContact``'s maxLengths: phones, city, state, zip and country 50, streets
    255, sms_number 16; columns the table does not list are capped at 255."""
    target = slow.new_list("Target")
    activity = json_import(
        slow,
        [
            {"email": "ok@example.com", "phone": "1" * 50, "street": "s" * 255, "city": "c" * 50},
            {"email": "phone@example.com", "home_phone": "1" * 51},
            {"email": "city@example.com", "work_city": "c" * 51},
            {"email": "sms@example.com", "sms_number": "1" * 17},
            {"email": "street@example.com", "other_street2": "s" * 256},
            {"email": "date@example.com", "anniversary": "a" * 256},
        ],
        [target],
    )
    slow.control.advance_clock(1)
    done = poll(slow, activity)
    assert done["activity_errors"] == [
        "import_data[1]: home_phone is longer than 50 characters",
        "import_data[2]: work_city is longer than 50 characters",
        "import_data[3]: sms_number is longer than 16 characters",
        "import_data[4]: other_street2 is longer than 255 characters",
        "import_data[5]: anniversary is longer than 255 characters",
    ]
    assert slow.members(target) == {"ok@example.com"}

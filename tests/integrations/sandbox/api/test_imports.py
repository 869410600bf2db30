"""``contacts_json_import`` and ``contacts_file_import``: CC's documented payload limits.

Reference: https://developer.constantcontact.com/api_guide/import_contacts.html
"""

from __future__ import annotations

import json

import pytest

from integrations.constant_contact.limits import IMPORT_MAX_BYTES
from tests.integrations.sandbox.conftest import World, json_import
from tests.integrations.sandbox.swagger import assert_api_error

pytestmark = pytest.mark.slow


def _csv_of_size(size: int) -> str:
    """A CSV with an email column of exactly ``size`` bytes, in lines of about 1 kB."""
    text = "email,notes\n"
    n = 0
    while size - len(text) > 2_000:
        text += f"c{n}@example.com,{'x' * 1_000}\n"
        n += 1
    last = f"c{n}@example.com,\n"
    return text + last[:-1] + "x" * (size - len(text) - len(last)) + "\n"


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
    assert len(payload) >= IMPORT_MAX_BYTES
    response = world.api.post(
        "/v3/activities/contacts_json_import",
        data=payload,
        headers={"Content-Type": "application/json"},
    )
    body = assert_api_error(response, 400)
    assert "4 MB" in body[0]["error_message"]


def test_json_import_body_must_be_smaller_than_4_000_000_bytes(world: World):
    """CC's limit is "less than 4 MB": 4,000,000 bytes, not 4 MiB."""
    target = world.new_list("Target")
    payload = json.dumps({"import_data": [{"email": "a@example.com"}], "list_ids": [target]})

    def send(size: int):
        return world.api.post(
            "/v3/activities/contacts_json_import",
            data=payload + " " * (size - len(payload)),  # JSON allows trailing whitespace
            headers={"Content-Type": "application/json"},
        )

    assert send(IMPORT_MAX_BYTES - 1).status_code == 201
    assert "4 MB" in assert_api_error(send(IMPORT_MAX_BYTES), 400)[0]["error_message"]


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
    assert len(big) > IMPORT_MAX_BYTES
    assert "4 MB" in assert_api_error(upload(big), 400)[0]["error_message"]


def test_csv_import_file_may_be_4_000_000_bytes_but_no_more(world: World):
    target = world.new_list("Target")

    def upload(text: str):
        return world.api.post(
            "/v3/activities/contacts_file_import",
            files={"file": ("people.csv", text.encode(), "text/csv")},
            data={"list_ids": target},
        )

    exact = _csv_of_size(IMPORT_MAX_BYTES)
    assert len(exact.encode()) == IMPORT_MAX_BYTES
    assert upload(exact).status_code == 201
    over = _csv_of_size(IMPORT_MAX_BYTES + 1)
    assert "4 MB" in assert_api_error(upload(over), 400)[0]["error_message"]

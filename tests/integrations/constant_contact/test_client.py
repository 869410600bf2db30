"""The client's shapes: what each endpoint sends, and what it makes of CC's answers."""

from __future__ import annotations

import json

import pytest

from integrations.constant_contact.client import (
    AccountSummary,
    Activity,
    ConstantContact,
    compact_json,
    json_import_body,
    next_page_path,
)
from integrations.constant_contact.errors import CCServerError, CCUnexpectedAnswer
from integrations.constant_contact.testing import FakeSender, UnexpectedCall
from tests.integrations.sandbox.swagger import spec

LIST = "0c8d3f30-5a4e-11ee-8c99-0242ac120002"


@pytest.fixture
def fake() -> FakeSender:
    return FakeSender()


@pytest.fixture
def cc(fake) -> ConstantContact:
    return ConstantContact(fake)


def test_contact_lists_follows_the_cursor_to_the_last_page(fake, cc):
    fake.answer(
        "GET",
        "/contact_lists",
        lambda call: (
            {
                "lists": [{"list_id": "a"}],
                "_links": {"next": {"href": "/v3/contact_lists?cursor=x"}},
            }
            if call.params
            else {"lists": [{"list_id": "b"}]}
        ),
    )
    assert [item["list_id"] for item in cc.contact_lists()] == ["a", "b"]
    first, second = fake.calls
    assert first.params == {
        "limit": 1000,
        "include_count": "true",
        "include_membership_count": "all",
    }
    assert second.path == "/contact_lists?cursor=x" and second.params is None


def test_next_page_path_is_relative_to_the_api_base():
    assert next_page_path({"_links": {"next": {"href": "/v3/contacts?cursor=abc"}}}) == (
        "/contacts?cursor=abc"
    )
    assert next_page_path({"_links": {}}) is None
    assert next_page_path({}) is None


def test_contacts_of_one_list_ask_for_that_list(fake, cc):
    fake.answer("GET", "/contacts", {"contacts": [{"contact_id": "c1"}]})
    assert [c["contact_id"] for c in cc.contacts(list_id=LIST, limit=50)] == ["c1"]
    assert fake.calls[0].params == {"limit": 50, "lists": LIST}


def test_json_import_sends_the_compact_body_the_chunker_measured(fake, cc):
    fake.answer("POST", "/activities/contacts_json_import", {"activity_id": "i1"})
    contacts = [{"email": "zoë@example.com", "first_name": "Zoë"}]
    activity = cc.contacts_json_import(contacts=contacts, list_ids=[LIST])
    (call,) = fake.calls
    assert call.json is None and call.data == json_import_body(contacts, [LIST])
    assert b" " not in call.data and call.data.isascii()
    assert json.loads(call.data) == {"import_data": contacts, "list_ids": [LIST]}
    assert len(compact_json(contacts[0])) == len(json.dumps(contacts[0], separators=(",", ":")))
    assert (activity.activity_id, activity.state) == ("i1", "initialized")


def test_membership_removal_by_ids_or_by_source_list(fake, cc):
    fake.answer("POST", "/activities/remove_list_memberships", {"activity_id": "r1"})
    cc.list_memberships_remove(contact_ids=["c1", "c2"], list_ids=[LIST])
    cc.list_memberships_remove(source_list_ids=[LIST], list_ids=[LIST])
    by_ids, by_list = (call.json for call in fake.calls)
    assert by_ids == {"source": {"contact_ids": ["c1", "c2"]}, "list_ids": [LIST]}
    assert by_list == {"source": {"list_ids": [LIST]}, "list_ids": [LIST]}


def test_export_link_and_download(fake, cc):
    fake.answer(
        "POST",
        "/activities/contact_exports",
        {
            "activity_id": "e1",
            "state": "initialized",
            "_links": {"results": {"href": "/v3/contact_exports/f9"}},
        },
    )
    fake.answer("GET", "/contact_exports/*", "Email Address\na@example.com\n")
    export = cc.contact_export_create(list_ids=[LIST], fields=["email_address"])
    assert export.file_export_id == "f9"
    assert cc.contact_export_download(export.file_export_id).startswith("Email Address")
    assert fake.calls[-1].accept == "text/csv"
    assert Activity("e2", "completed").file_export_id == "e2"  # no link: CC's activity id


def test_activity_answers_become_typed_records(fake, cc):
    fake.answer(
        "GET",
        "/activities",
        {
            "activities": [
                {
                    "activity_id": "a1",
                    "state": "completed",
                    "percent_done": 100,
                    "status": {"items_total_count": "3", "error_count": 1},
                    "activity_errors": ["import_data[0]: bad", {"message": "as an object"}],
                },
                {"activity_id": "a2", "state": "processing", "percent_done": None},
            ]
        },
    )
    done, running = cc.activities(limit=50)
    assert done.is_finished and not running.is_finished
    assert done.status == {"items_total_count": 3, "error_count": 1}
    assert done.errors == ("import_data[0]: bad", "as an object")
    assert running.percent_done == 0
    assert fake.calls[0].params == {"limit": 50}


@pytest.mark.parametrize("answer", [None, [], {"state": "completed"}, {"activity_id": 7}])
def test_an_activity_answer_without_an_id_is_refused_readably(fake, cc, answer):
    fake.answer("GET", "/activities/*", answer)
    with pytest.raises(CCUnexpectedAnswer, match="no activity_id"):
        cc.activity("a1")


def test_the_fake_raises_scripted_errors_and_refuses_unscripted_calls(fake, cc):
    error = CCServerError(status=503, method="GET", path="/activities/{id}", body=None)
    fake.answer("GET", "/activities/*", raises=error, times=1)
    fake.answer("GET", "/activities/*", {"activity_id": "a1", "state": "completed"})
    with pytest.raises(CCServerError):
        cc.activity("a1")
    assert cc.activity("a1").is_finished
    with pytest.raises(UnexpectedCall, match="GET /contacts"):
        list(cc.contacts())
    assert len(fake.sent("GET", "/activities/*")) == 2


# --- account summary -------------------------------------------------------------------------
def _customer_example() -> dict:
    """A ``Customer`` made of the spec's own example values, as CC documents the answer."""
    properties = spec()["definitions"]["Customer"]["properties"]
    return {name: prop["example"] for name, prop in properties.items() if "example" in prop}


def test_account_summary_is_one_get_without_extra_fields_read_from_the_specs_customer(fake, cc):
    customer = _customer_example()
    fake.answer("GET", "/account/summary", customer)
    summary = cc.account_summary()
    assert [(c.method, c.path, c.params) for c in fake.calls] == [("GET", "/account/summary", None)]
    assert summary == AccountSummary(
        organization_name=customer["organization_name"],
        contact_email=customer["contact_email"],
        encoded_account_id=customer["encoded_account_id"],
        first_name=customer["first_name"],
        last_name=customer["last_name"],
    )


def test_an_account_summary_without_names_reads_as_blank_names(fake, cc):
    fake.answer("GET", "/account/summary", {"encoded_account_id": "p07e1l8cdif9dl"})
    summary = cc.account_summary()
    assert (summary.organization_name, summary.contact_email) == ("", "")


@pytest.mark.parametrize("answer", [[], "text", {"organization_name": 7}, {"contact_email": {}}])
def test_an_account_summary_of_the_wrong_shape_is_refused_readably(fake, cc, answer):
    fake.answer("GET", "/account/summary", answer)
    with pytest.raises(CCUnexpectedAnswer, match="account summary"):
        cc.account_summary()

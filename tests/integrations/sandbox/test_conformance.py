"""Every implemented endpoint answers what CC's swagger.yaml declares, and requests the spec
calls invalid get CC's error shapes."""

from __future__ import annotations

import uuid

import pytest

from tests.integrations.sandbox.conftest import APP, Api, World
from tests.integrations.sandbox.swagger import (
    assert_api_error,
    assert_gateway_error,
    definition,
    response_schema,
    validate,
)

pytestmark = pytest.mark.slow


def _ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


@pytest.fixture
def seeded(world: World) -> World:
    world.control.set_options(activity_items_per_second=1_000_000)
    newsletter = world.new_list("Newsletter")
    world.new_list("Customers")
    world.control.seed_contacts(world.account, count=5, list_ids=[newsletter], unsubscribed_every=5)
    world.newsletter = newsletter
    return world


def test_contact_lists_match_the_spec(seeded: World):
    api = seeded.api
    page = api.get(
        "/v3/contact_lists",
        params={"limit": 1, "include_count": "true", "include_membership_count": "all"},
    )
    assert page.status_code == 200
    validate(page.json(), response_schema("/contact_lists", "get", 200))
    assert page.json()["lists_count"] == 2
    next_href = page.json()["_links"]["next"]["href"]
    assert next_href.startswith("/v3/contact_lists?cursor=")
    second = api.get(next_href)
    validate(second.json(), response_schema("/contact_lists", "get", 200))
    assert "_links" not in second.json()

    created = api.post("/v3/contact_lists", json={"name": "VIP", "favorite": True})
    assert created.status_code == 201
    validate(created.json(), response_schema("/contact_lists", "post", 201))

    one = api.get(
        f"/v3/contact_lists/{seeded.newsletter}", params={"include_membership_count": "active"}
    )
    validate(one.json(), response_schema("/contact_lists/{list_id}", "get", 200))
    assert one.json()["membership_count"] == 4  # the 5th contact is unsubscribed


def test_contacts_match_the_spec(seeded: World):
    api = seeded.api
    page = api.get(
        "/v3/contacts",
        params={"limit": 2, "include": "list_memberships", "include_count": "true"},
    )
    assert page.status_code == 200
    validate(page.json(), response_schema("/contacts", "get", 200))
    assert page.json()["contacts_count"] == 5
    assert page.json()["contacts"][0]["list_memberships"] == [seeded.newsletter]

    created = api.post(
        "/v3/contacts",
        json={
            "email_address": {"address": "new@example.com", "permission_to_send": "explicit"},
            "first_name": "Nia",
            "last_name": "Lang",
            "birthday_month": 11,
            "birthday_day": 24,
            "create_source": "Contact",
            "list_memberships": [seeded.newsletter],
        },
    )
    assert created.status_code == 201
    validate(created.json(), response_schema("/contacts", "post", 201))

    contact_id = created.json()["contact_id"]
    one = api.get(f"/v3/contacts/{contact_id}", params={"include": "list_memberships,notes"})
    validate(one.json(), response_schema("/contacts/{contact_id}", "get", 200))
    assert one.json()["list_memberships"] == [seeded.newsletter]
    assert one.json()["notes"] == []


def test_every_activity_matches_the_spec(seeded: World):
    api = seeded.api
    target = seeded.new_list("Target")
    contact_ids = [c["contact_id"] for c in api.get("/v3/contacts").json()["contacts"]]

    export = api.post("/v3/activities/contact_exports", json={"list_ids": [seeded.newsletter]})
    assert export.status_code == 201
    validate(export.json(), response_schema("/activities/contact_exports", "post", 201))
    assert export.json()["state"] == "initialized"

    json_import = api.post(
        "/v3/activities/contacts_json_import",
        json={"import_data": [{"email": "a@example.com"}], "list_ids": [target]},
    )
    assert json_import.status_code == 201
    validate(json_import.json(), response_schema("/activities/contacts_json_import", "post", 201))

    file_import = api.post(
        "/v3/activities/contacts_file_import",
        files={"file": ("people.csv", b"email,first_name\nb@example.com,Bo\n", "text/csv")},
        data={"list_ids": target},
    )
    assert file_import.status_code == 201
    validate(file_import.json(), response_schema("/activities/contacts_file_import", "post", 201))
    assert file_import.json()["source_file_name"] == "people.csv"

    for path in ("add_list_memberships", "remove_list_memberships"):
        membership = api.post(
            f"/v3/activities/{path}",
            json={"source": {"contact_ids": contact_ids[:2]}, "list_ids": [target]},
        )
        assert membership.status_code == 201
        validate(membership.json(), response_schema(f"/activities/{path}", "post", 201))

    listing = api.get("/v3/activities", params={"limit": 3})
    validate(listing.json(), response_schema("/activities", "get", 200))
    assert listing.json()["_links"]["next"]["href"].startswith("/v3/activities?cursor=")
    everything = api.get("/v3/activities", params={"state": "completed"}).json()["activities"]
    assert len(everything) == 5
    for activity in everything:
        one = api.get(f"/v3/activities/{activity['activity_id']}")
        validate(one.json(), response_schema("/activities/{activity_id}", "get", 200))
        assert one.json()["percent_done"] == 100

    csv = api.get(export.json()["_links"]["results"]["href"], headers={"Accept": "text/csv"})
    assert csv.status_code == 200
    assert csv.headers["Content-Type"].startswith("text/csv")
    validate(csv.text, response_schema("/contact_exports/{file_export_id}", "get", 200))


INVALID_GETS = [
    ("/v3/contact_lists", {"limit": 0}),
    ("/v3/contact_lists", {"limit": 1001}),
    ("/v3/contact_lists", {"limit": "ten"}),
    ("/v3/contact_lists", {"include_membership_count": "some"}),
    ("/v3/contact_lists", {"include_count": "maybe"}),
    ("/v3/contact_lists", {"status": "archived"}),
    ("/v3/contacts", {"limit": 0}),
    ("/v3/contacts", {"limit": 501}),
    ("/v3/contacts", {"status": "happy"}),
    ("/v3/contacts", {"include": "friends"}),
    ("/v3/contacts", {"lists": ",".join(_ids(26))}),
    ("/v3/contacts", {"updated_after": "yesterday"}),
    ("/v3/contacts", {"cursor": "%%%"}),
    ("/v3/activities", {"limit": 501}),
    ("/v3/activities", {"state": "sleeping"}),
]


@pytest.mark.parametrize(("path", "params"), INVALID_GETS)
def test_invalid_query_parameters_get_a_validation_error_array(world: World, path, params):
    body = assert_api_error(world.api.get(path, params=params), 400)
    assert body[0]["error_key"] == "contacts.api.validation.error"


INVALID_POSTS = [
    ("/v3/contact_lists", {}),
    ("/v3/contact_lists", {"name": "x" * 256}),
    ("/v3/contact_lists", {"name": "Fine", "favorite": "yes"}),
    ("/v3/contacts", {"email_address": {"address": "a@example.com"}}),
    ("/v3/contacts", {"create_source": "Account", "email_address": {"address": "not-an-email"}}),
    (
        "/v3/contacts",
        {
            "create_source": "Account",
            "email_address": {"address": "a@example.com"},
            "birthday_month": 13,
        },
    ),
    ("/v3/activities/contacts_json_import", {"import_data": [{"email": "a@example.com"}]}),
    (
        "/v3/activities/contacts_json_import",
        {"import_data": [{"email": "a@example.com"}], "list_ids": []},
    ),
    (
        "/v3/activities/contacts_json_import",
        {"import_data": [{"email": "a@example.com"}], "list_ids": _ids(51)},
    ),
    ("/v3/activities/contacts_json_import", {"import_data": [], "list_ids": _ids(1)}),
    ("/v3/activities/contacts_json_import", {"list_ids": _ids(1)}),
    ("/v3/activities/add_list_memberships", {"list_ids": _ids(1)}),
    (
        "/v3/activities/add_list_memberships",
        {"source": {"contact_ids": _ids(1), "all_active_contacts": True}, "list_ids": _ids(1)},
    ),
    (
        "/v3/activities/add_list_memberships",
        {"source": {"contact_ids": _ids(501)}, "list_ids": _ids(1)},
    ),
    (
        "/v3/activities/add_list_memberships",
        {"source": {"list_ids": _ids(51)}, "list_ids": _ids(1)},
    ),
    (
        "/v3/activities/add_list_memberships",
        {"source": {"contact_ids": _ids(1)}, "list_ids": _ids(51)},
    ),
    (
        "/v3/activities/remove_list_memberships",
        {"source": {"contact_ids": _ids(501)}, "list_ids": _ids(1)},
    ),
    (
        "/v3/activities/remove_list_memberships",
        {"source": {"contact_ids": _ids(1)}, "list_ids": []},
    ),
    ("/v3/activities/contact_exports", {"contact_ids": _ids(501)}),
    ("/v3/activities/contact_exports", {"list_ids": _ids(51)}),
    ("/v3/activities/contact_exports", {"contact_ids": _ids(1), "list_ids": _ids(1)}),
    ("/v3/activities/contact_exports", {"fields": ["shoe_size"]}),
]


@pytest.mark.parametrize(("path", "body"), INVALID_POSTS)
def test_invalid_bodies_get_a_validation_error_array(world: World, path, body):
    body = assert_api_error(world.api.post(path, json=body), 400)
    assert body[0]["error_key"] == "contacts.api.validation.error"


def test_unsupported_media_types_get_415(world: World):
    api = world.api
    assert_api_error(api.post("/v3/contacts", data="email=a@example.com"), 415)
    list_id = world.new_list("Target")
    assert_api_error(
        api.post("/v3/activities/contacts_file_import", json={"list_ids": list_id}), 415
    )
    not_csv = api.post(
        "/v3/activities/contacts_file_import",
        files={"file": ("people.xlsx", b"PK\x03\x04", "application/vnd.ms-excel")},
        data={"list_ids": list_id},
    )
    body = assert_api_error(not_csv, 415)
    assert "upload file must be of type .csv" in body[0]["error_message"]


def test_missing_resources_get_404(world: World):
    api = world.api
    body = assert_api_error(api.get(f"/v3/activities/{uuid.uuid4()}"), 404)
    assert body[0]["error_message"] == "Resource not found for the activity_id provided"
    assert_api_error(api.get(f"/v3/contacts/{uuid.uuid4()}"), 404)
    assert_api_error(api.get("/v3/contacts/not-a-uuid"), 404)
    assert_api_error(api.get(f"/v3/contact_lists/{uuid.uuid4()}"), 404)
    assert_api_error(api.get(f"/v3/contact_exports/{uuid.uuid4()}"), 404)
    assert_api_error(api.get("/v3/no_such_resource"), 404)
    assert_api_error(
        api.post(
            "/v3/activities/remove_list_memberships",
            json={"source": {"contact_ids": _ids(1)}, "list_ids": _ids(1)},
        ),
        404,
    )


def test_unsupported_methods_get_405(world: World):
    response = world.api.session.delete(world.api.base + "/v3/contacts", timeout=10)
    assert_api_error(response, 405)
    assert response.headers["Allow"] == "GET, POST"


def test_conflicts_get_409(world: World):
    api = world.api
    world.new_list("Newsletter")
    assert_api_error(api.post("/v3/contact_lists", json={"name": "newsletter"}), 409)
    contact = {"create_source": "Account", "email_address": {"address": "dup@example.com"}}
    assert api.post("/v3/contacts", json=contact).status_code == 201
    contact["email_address"]["address"] = "DUP@example.com"
    assert_api_error(api.post("/v3/contacts", json=contact), 409)


def test_gateway_errors_are_single_objects(world: World):
    api = world.api
    no_token = api.session.get(api.base + "/v3/contacts", headers={"Authorization": ""})
    assert_gateway_error(no_token, 401, "unauthorized")
    assert no_token.json() == {"error_key": "unauthorized", "error_message": "Unauthorized"}
    validate(no_token.json(), definition("AuthorizationErrorSchema"))


def test_account_summary_matches_the_spec(world: World):
    api = world.fresh_api_with("account_read")
    summary = api.get("/v3/account/summary")
    assert summary.status_code == 200
    validate(summary.json(), response_schema("/account/summary", "get", 200))
    assert summary.json()["contact_email"] == "owner@example.com"
    assert summary.json()["organization_name"] == "Owner's organization"
    assert "physical_address" not in summary.json()

    both = api.get("/v3/account/summary", params={"extra_fields": "physical_address,company_logo"})
    validate(both.json(), response_schema("/account/summary", "get", 200))
    assert both.json()["physical_address"]["country_code"] == "US"
    assert "company_logo" not in both.json(), "the sandbox account has no logo"
    assert both.json()["encoded_account_id"] == summary.json()["encoded_account_id"]

    named = world.control.create_account("lola@example.com", organization_name="InstaPrinz")
    tokens = world.control.mint_tokens(APP, account=named, scope="account_read")
    other = Api(world.control, tokens["access_token"]).get("/v3/account/summary").json()
    assert (other["organization_name"], other["contact_email"]) == (
        "InstaPrinz",
        "lola@example.com",
    )


@pytest.mark.parametrize("extra_fields", ["logo", "physical_address,shoe_size", ""])
def test_account_summary_refuses_unknown_extra_fields(world: World, extra_fields):
    api = world.fresh_api_with("account_read")
    body = assert_api_error(
        api.get("/v3/account/summary", params={"extra_fields": extra_fields}), 400
    )
    assert body[0]["error_key"] == "contacts.api.validation.error"


def test_account_summary_needs_account_read_and_contact_data_is_not_enough(world: World):
    body = assert_api_error(world.api.get("/v3/account/summary"), 403)
    assert body[0]["error_key"] == "forbidden"
    assert "account_read" in body[0]["error_message"]
    only_account_read = world.fresh_api_with("account_read")
    assert_api_error(only_account_read.get("/v3/contact_lists"), 403)
    no_token = world.api.session.get(
        world.api.base + "/v3/account/summary", headers={"Authorization": ""}
    )
    assert_gateway_error(no_token, 401, "unauthorized")

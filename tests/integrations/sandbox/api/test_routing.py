"""Routing: which handler a ``/v3`` path reaches (in-process)."""

from __future__ import annotations

from integrations.sandbox import api
from integrations.sandbox.api.account import get_summary
from integrations.sandbox.api.activity_status import get_activity
from integrations.sandbox.api.contacts import get_contact
from integrations.sandbox.api.exports import create_export
from tests.integrations.sandbox.swagger import spec


def test_fixed_paths_win_over_path_parameters():
    route, params = api.resolve("/v3/activities/contact_exports")
    assert (route.template, params) == ("/v3/activities/contact_exports", {})
    assert route.methods == {"POST": create_export}
    route, params = api.resolve("/v3/activities/0b1c2d3e")
    assert route.methods["GET"] is get_activity
    assert params == {"activity_id": "0b1c2d3e"}


def test_a_trailing_slash_is_accepted_and_unknown_paths_resolve_to_nothing():
    route, params = api.resolve("/v3/contacts/abc/")
    assert (route.methods["GET"], params) == (get_contact, {"contact_id": "abc"})
    assert api.resolve("/v3/no_such_resource") == (None, {})
    assert api.resolve("/v3/contacts/abc/notes") == (None, {})


def test_each_route_asks_for_the_scope_the_spec_secures_it_with():
    for route in api.ROUTES:
        operations = spec()["paths"][route.template.removeprefix("/v3")]
        for method in route.methods:
            security = operations[method.lower()]["security"]
            code_flow = next(
                item["oauth2_access_code"] for item in security if "oauth2_access_code" in item
            )
            assert code_flow == [route.scope], (method, route.template)
    summary, _ = api.resolve("/v3/account/summary")
    assert (summary.methods, summary.scope) == ({"GET": get_summary}, "account_read")

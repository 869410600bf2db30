"""The v3 API subset the portal uses, one module per resource, and the routing between them.

* :mod:`.account` — the account summary (the one route needing ``account_read``);
* :mod:`.lists` — contact lists; :mod:`.contacts` — contacts;
* :mod:`.imports` — JSON and CSV contact imports; :mod:`.exports` — contact exports and their
  CSV; :mod:`.memberships` — adding and removing list memberships in bulk;
* :mod:`.activity_status` — listing and reading bulk activities;
* :mod:`.common` — the request context, :class:`Invalid`, and the parameter, cursor and body
  helpers they share.

Shapes follow the swagger definitions (``ContactListArray``, ``ContactList``,
``ContactListPutPost``, ``Contacts``, ``ContactResource``, ``ActivityImport``,
``ActivityExportStatus``, ``ActivityListsMembership``, ``Activity``, ``Activities``); errors
follow ``APIErrorSchema`` (an array). Where the spec declares a 404 for an operation, unknown
referenced ids answer 404; elsewhere they are validation errors (400).

Handlers parse and validate outside the sandbox lock, then take it (settling due activities
first, see ``activities.settle``) only to read or change the account, and encode JSON after.

Reference: https://developer.constantcontact.com/api_reference/index.html
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

from werkzeug.wrappers import Request

from integrations.sandbox.api.account import get_summary
from integrations.sandbox.api.activity_status import get_activity, list_activities
from integrations.sandbox.api.common import Ctx, Invalid
from integrations.sandbox.api.contacts import create_contact, get_contact, list_contacts
from integrations.sandbox.api.exports import create_export, get_export
from integrations.sandbox.api.imports import file_import, json_import
from integrations.sandbox.api.lists import create_list, get_list, list_lists
from integrations.sandbox.api.memberships import add_memberships, remove_memberships
from integrations.sandbox.oauth import Caller
from integrations.sandbox.responses import Reply, api_error, not_found
from integrations.sandbox.state import Sandbox

__all__ = ["CONTACT_DATA", "ROUTES", "Ctx", "Handler", "Invalid", "Route", "dispatch", "resolve"]

Handler = Callable[[Ctx], Reply]

#: The scope every contact, list and activity endpoint needs (the spec's ``security``).
CONTACT_DATA = "contact_data"


@dataclass(frozen=True)
class Route:
    template: str  # e.g. "/v3/contacts/{contact_id}", used in stats
    pattern: re.Pattern[str]
    methods: dict[str, Handler]
    scope: str = CONTACT_DATA  # a token without it gets CC's 403


def _route(template: str, methods: dict[str, Handler], scope: str = CONTACT_DATA) -> Route:
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
    return Route(template, re.compile(f"^{regex}/?$"), methods, scope)


ROUTES = (
    _route("/v3/account/summary", {"GET": get_summary}, scope="account_read"),
    _route("/v3/contact_lists", {"GET": list_lists, "POST": create_list}),
    _route("/v3/contact_lists/{list_id}", {"GET": get_list}),
    _route("/v3/contacts", {"GET": list_contacts, "POST": create_contact}),
    _route("/v3/contacts/{contact_id}", {"GET": get_contact}),
    _route("/v3/activities", {"GET": list_activities}),
    _route("/v3/activities/contact_exports", {"POST": create_export}),
    _route("/v3/activities/contacts_json_import", {"POST": json_import}),
    _route("/v3/activities/contacts_file_import", {"POST": file_import}),
    _route("/v3/activities/add_list_memberships", {"POST": add_memberships}),
    _route("/v3/activities/remove_list_memberships", {"POST": remove_memberships}),
    _route("/v3/activities/{activity_id}", {"GET": get_activity}),
    _route("/v3/contact_exports/{file_export_id}", {"GET": get_export}),
)


def resolve(path: str) -> tuple[Route | None, dict[str, str]]:
    """The route for ``path`` and its path parameters (first match wins)."""
    for route in ROUTES:
        match = route.pattern.match(path)
        if match:
            return route, match.groupdict()
    return None, {}


def dispatch(
    sandbox: Sandbox, request: Request, caller: Caller, route: Route | None, params: dict[str, str]
) -> Reply:
    if route is None:
        return not_found(f"No resource at {request.path}.")
    handler = route.methods.get(request.method)
    if handler is None:
        reply = api_error(
            HTTPStatus.METHOD_NOT_ALLOWED,
            "contacts.api.method_not_allowed",
            f"{request.method} is not supported on {route.template} by the sandbox.",
        )
        reply.headers.append(("Allow", ", ".join(route.methods)))
        return reply
    try:
        return handler(Ctx(sandbox=sandbox, request=request, caller=caller, params=params))
    except Invalid as refusal:
        return refusal.reply

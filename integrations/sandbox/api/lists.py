"""Contact lists: ``GET``/``POST /v3/contact_lists`` and ``GET /v3/contact_lists/{list_id}``.

Shapes follow the swagger definitions ``ContactListArray``, ``ContactList`` and
``ContactListPutPost``.

Reference: https://developer.constantcontact.com/api_reference/index.html#!/Contact_Lists/getLists
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from integrations.constant_contact.limits import CONTACT_LISTS_PAGE_MAX
from integrations.sandbox.api.common import (
    CONFLICT_KEY,
    Ctx,
    Invalid,
    bool_param,
    choice_param,
    csv_param,
    invalid,
    json_body,
    json_object,
    limit_param,
    next_link,
    offset_param,
    query_args,
)
from integrations.sandbox.clock import iso
from integrations.sandbox.responses import Reply, api_error, json_reply, not_found
from integrations.sandbox.state import UUID_RE, Account, ContactList

MEMBERSHIP_COUNTS = ("all", "active")
LIST_STATUSES = ("all", "active", "deleted")
CHANNEL_TYPES = ("email", "sms")
NAME_MAX_LENGTH = 255


def list_json(contact_list: ContactList, account: Account, count: str | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "list_id": contact_list.list_id,
        "name": contact_list.name,
        "favorite": contact_list.favorite,
        "created_at": iso(contact_list.created_at),
        "updated_at": iso(contact_list.updated_at),
    }
    if contact_list.description is not None:
        data["description"] = contact_list.description
    if count == "all":
        data["membership_count"] = len(contact_list.members)
    elif count == "active":
        by_id = account.contacts_by_id
        data["membership_count"] = sum(
            1 for cid in contact_list.members if not by_id[cid].is_unsubscribed
        )
    return data


def list_lists(ctx: Ctx) -> Reply:
    args = query_args(ctx.request)
    limit = limit_param(args, CONTACT_LISTS_PAGE_MAX)
    include_count = bool_param(args, "include_count")
    count = choice_param(args, "include_membership_count", MEMBERSHIP_COUNTS)
    statuses = csv_param(args, "status", LIST_STATUSES)
    choice_param(args, "channel_type", CHANNEL_TYPES)
    name = args.get("name")
    offset = offset_param(args)
    with ctx.data() as account:
        lists = list(account.lists.values())
        if name is not None:
            lists = [lst for lst in lists if lst.name.casefold() == name.casefold()]
        if statuses and not {"all", "active"} & set(statuses):
            lists = []  # the sandbox never has deleted lists
        page = lists[offset : offset + limit]
        body: dict[str, Any] = {"lists": [list_json(lst, account, count) for lst in page]}
        if include_count:
            body["lists_count"] = len(lists)
        if offset + limit < len(lists):
            body["_links"] = next_link("/v3/contact_lists", args, offset=offset + limit)
    return json_reply(body)


def create_list(ctx: Ctx) -> Reply:
    body = json_object(json_body(ctx.request))
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise invalid("name is required.")
    if len(name) > NAME_MAX_LENGTH:
        raise invalid(f"name must be at most {NAME_MAX_LENGTH} characters.")
    favorite = body.get("favorite", False)
    description = body.get("description")
    if not isinstance(favorite, bool):
        raise invalid("favorite must be true or false.")
    if description is not None and not isinstance(description, str):
        raise invalid("description must be a string.")
    with ctx.data() as account:
        if account.list_named(name) is not None:
            raise Invalid(
                api_error(
                    HTTPStatus.CONFLICT,
                    CONFLICT_KEY,
                    f"A contact list named {name!r} already exists.",
                )
            )
        created = account.create_list(
            name, now=ctx.sandbox.now(), description=description, favorite=favorite
        )
        data = list_json(created, account, None)
    return json_reply(data, HTTPStatus.CREATED)


def get_list(ctx: Ctx) -> Reply:
    count = choice_param(ctx.request.args, "include_membership_count", MEMBERSHIP_COUNTS)
    list_id = ctx.params["list_id"]
    if not UUID_RE.match(list_id):
        return not_found("list_id is in an invalid format.")
    with ctx.data() as account:
        contact_list = account.lists.get(list_id)
        if contact_list is None:
            return not_found(f"Contact list {list_id} was not found.")
        data = list_json(contact_list, account, count)
    return json_reply(data)

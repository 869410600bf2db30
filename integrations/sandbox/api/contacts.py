"""Contacts: ``GET``/``POST /v3/contacts`` and ``GET /v3/contacts/{contact_id}``.

Shapes follow the swagger definitions ``Contacts`` and ``ContactResource``. Paging is by
cursor; the cursor carries every filter and the position (``after``: the ``seq`` of the last
contact returned), so pages are stable in creation order.

Reference: https://developer.constantcontact.com/api_reference/index.html#!/Contacts/getContacts
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from integrations.constant_contact.limits import (
    CONTACT_EMAIL_MAX_LENGTH,
    CONTACTS_PAGE_MAX,
    IMPORT_INTEGER_FIELDS,
    LISTS_PER_CONTACT_MAX,
)
from integrations.sandbox.api.common import (
    CONFLICT_KEY,
    Ctx,
    Invalid,
    after_param,
    bool_param,
    csv_param,
    date_param,
    id_list,
    invalid,
    json_body,
    json_object,
    known_lists,
    limit_param,
    next_link,
    query_args,
)
from integrations.sandbox.clock import iso
from integrations.sandbox.responses import Reply, api_error, json_reply, not_found
from integrations.sandbox.state import (
    EMAIL_RE,
    PROFILE_FIELDS,
    PROFILE_INT_FIELDS,
    UUID_RE,
    Account,
    Contact,
)

CONTACT_STATUSES = (
    "all",
    "active",
    "deleted",
    "not_set",
    "pending_confirmation",
    "temp_hold",
    "unsubscribed",
)
PERMISSIONS = (
    "explicit",
    "implicit",
    "not_set",
    "pending_confirmation",
    "temp_hold",
    "unsubscribed",
)
DATE_FILTERS = (
    "created_after",
    "created_before",
    "updated_after",
    "updated_before",
    "optout_after",
    "optout_before",
)
CONTACT_INCLUDES = (
    "custom_fields",
    "list_memberships",
    "phone_numbers",
    "street_addresses",
    "taggings",
    "notes",
)
SMS_STATUSES = ("all", "explicit", "unsubscribed", "pending_confirmation", "not_set")


# --- representation --------------------------------------------------------------------------
def contact_json(
    contact: Contact, includes: list[str], memberships: list[str] | None = None
) -> dict[str, Any]:
    email: dict[str, Any] = {
        "address": contact.email,
        "permission_to_send": contact.permission_to_send,
        "created_at": iso(contact.created_at),
        "updated_at": iso(contact.updated_at),
        "confirm_status": "off",
    }
    if contact.opt_in_source:
        email["opt_in_source"] = contact.opt_in_source
    if contact.opt_in_date:
        email["opt_in_date"] = iso(contact.opt_in_date)
    if contact.opt_out_date:
        email["opt_out_source"] = contact.opt_out_source or "Contact"
        email["opt_out_date"] = iso(contact.opt_out_date)
        if contact.opt_out_reason:
            email["opt_out_reason"] = contact.opt_out_reason
    data: dict[str, Any] = {"contact_id": contact.contact_id, "email_address": email}
    profile = contact.profile
    for name in PROFILE_FIELDS:
        if name in profile:
            data[name] = str(profile[name])
    for name in PROFILE_INT_FIELDS:
        if name in profile:
            data[name] = int(profile[name])
    data["create_source"] = contact.create_source
    if contact.update_source:
        data["update_source"] = contact.update_source
    data["created_at"] = iso(contact.created_at)
    data["updated_at"] = iso(contact.updated_at)
    for name in includes:
        # Only list memberships are modelled; the other sub-resources are always empty.
        data[name] = (memberships or []) if name == "list_memberships" else []
    return data


def _memberships(account: Account, contacts: list[Contact]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {contact.contact_id: [] for contact in contacts}
    for contact_list in account.lists.values():
        members = contact_list.members
        for contact_id, lists in result.items():
            if contact_id in members:
                lists.append(contact_list.list_id)
    return result


# --- handlers --------------------------------------------------------------------------------
def list_contacts(ctx: Ctx) -> Reply:
    args = query_args(ctx.request)
    limit = limit_param(args, CONTACTS_PAGE_MAX)
    statuses = set(csv_param(args, "status", CONTACT_STATUSES))
    includes = csv_param(args, "include", CONTACT_INCLUDES)
    csv_param(args, "sms_status", SMS_STATUSES)
    include_count = bool_param(args, "include_count")
    email = args.get("email")
    list_filter = [v.strip() for v in args.get("lists", "").split(",") if v.strip()]
    if len(list_filter) > 25:
        raise invalid("lists may contain at most 25 list ids.")
    tags = [v for v in args.get("tags", "").split(",") if v.strip()]
    if len(tags) > 50:
        raise invalid("tags may contain at most 50 tag ids.")
    bounds: list[tuple[str, bool, float]] = []  # (attribute, is a lower bound, value)
    for name in DATE_FILTERS:
        bound = date_param(args, name)
        if bound is not None:
            attr = "opt_out_date" if name.startswith("optout") else f"{name.split('_')[0]}_at"
            bounds.append((attr, name.endswith("_after"), bound))
    after = after_param(args)
    if args.get("segment_id") is not None:
        return not_found("segment_id was not found.")

    def wanted(contact: Contact) -> bool:
        if statuses and "all" not in statuses:
            state = "unsubscribed" if contact.is_unsubscribed else "active"
            if state not in statuses and contact.permission_to_send not in statuses:
                return False
        for attr, lower, bound in bounds:
            value = getattr(contact, attr)
            if value is None or (value <= bound if lower else value >= bound):
                return False
        return True

    with ctx.data() as account:
        candidates = _candidates(account, email=email, list_ids=list_filter, tags=tags, after=after)
        page: list[Contact] = []
        more = False
        for contact in candidates:
            if wanted(contact):
                if len(page) == limit:
                    more = True
                    break
                page.append(contact)
        lists_of = _memberships(account, page) if "list_memberships" in includes else {}
        body: dict[str, Any] = {
            "contacts": [contact_json(c, includes, lists_of.get(c.contact_id)) for c in page]
        }
        if include_count:
            everything = _candidates(
                account, email=email, list_ids=list_filter, tags=tags, after=-1
            )
            body["contacts_count"] = sum(1 for contact in everything if wanted(contact))
        if more:
            body["_links"] = next_link("/v3/contacts", args, after=page[-1].seq)
    return json_reply(body)


def _candidates(
    account: Account, *, email: str | None, list_ids: list[str], tags: list[str], after: int
) -> Iterable[Contact]:
    """Contacts a filter can match, in creation order, after position ``after``."""
    if tags:
        return []  # the sandbox models no tags
    if email is not None:
        found = account.find_contact(email)
        return [found] if found is not None and found.seq > after else []
    if list_ids:
        ids: set[str] = set()
        for list_id in list_ids:
            if list_id in account.lists:
                ids.update(account.lists[list_id].members)
        by_id = account.contacts_by_id
        return sorted((by_id[i] for i in ids if by_id[i].seq > after), key=lambda c: c.seq)
    contacts = account.contacts
    return (contacts[i] for i in range(after + 1, len(contacts)))


def create_contact(ctx: Ctx) -> Reply:
    body = json_object(json_body(ctx.request))
    if body.get("create_source") not in ("Account", "Contact"):
        raise invalid("create_source is required and must be Account or Contact.")
    email_address = body.get("email_address")
    # CC also accepts contacts with only a name or an SMS channel; the sandbox keys every
    # contact by email, so it requires one.
    if not isinstance(email_address, dict) or not isinstance(email_address.get("address"), str):
        raise invalid("email_address.address is required.")
    address = email_address["address"].strip()
    if len(address) > CONTACT_EMAIL_MAX_LENGTH or not EMAIL_RE.match(address):
        raise invalid(f"email_address.address {address!r} is not a valid email address.")
    permission = email_address.get("permission_to_send", "implicit")
    if permission not in PERMISSIONS:
        raise invalid("email_address.permission_to_send does not have a valid value")
    profile: dict[str, Any] = {}
    for name in PROFILE_FIELDS:
        if name in body:
            value = body[name]
            limit = 10 if name == "anniversary" else 50
            if not isinstance(value, str) or len(value) > limit:
                raise invalid(f"{name} must be a string of at most {limit} characters.")
            profile[name] = value
    for name in PROFILE_INT_FIELDS:
        if name in body:
            value = body[name]
            top = IMPORT_INTEGER_FIELDS[name]
            if not isinstance(value, int) or not 1 <= value <= top:
                raise invalid(f"{name} must be a whole number from 1 to {top}.")
            profile[name] = value
    list_ids = id_list(
        body.get("list_memberships", []), "list_memberships", maximum=LISTS_PER_CONTACT_MAX
    )
    with ctx.data() as account:
        known_lists(account, list_ids, "list_memberships", status=HTTPStatus.BAD_REQUEST)
        existing = account.find_contact(address)
        if existing is not None:
            raise Invalid(
                api_error(
                    HTTPStatus.CONFLICT,
                    CONFLICT_KEY,
                    f"Email already exists for contact {existing.contact_id}.",
                )
            )
        now = ctx.sandbox.now()
        contact = account.create_contact(
            address,
            now=now,
            permission_to_send=permission,
            create_source=body["create_source"],
            profile=profile,
        )
        joined = []
        if not contact.is_unsubscribed:
            for list_id in list_ids:
                if account.add_member(account.lists[list_id], contact, now=now):
                    joined.append(list_id)
        data = contact_json(contact, ["list_memberships"] if list_ids else [], joined)
    return json_reply(data, HTTPStatus.CREATED)


def get_contact(ctx: Ctx) -> Reply:
    includes = csv_param(ctx.request.args, "include", CONTACT_INCLUDES)
    contact_id = ctx.params["contact_id"]
    if not UUID_RE.match(contact_id):
        return not_found("contact_id is in an invalid format.")
    with ctx.data() as account:
        contact = account.contacts_by_id.get(contact_id)
        if contact is None:
            return not_found(f"Contact {contact_id} was not found.")
        lists = account.lists_of(contact_id) if "list_memberships" in includes else None
        data = contact_json(contact, includes, lists)
    return json_reply(data)

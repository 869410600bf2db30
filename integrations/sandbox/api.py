"""The v3 API subset the portal uses: contact lists, contacts, bulk activities and exports.

Shapes follow the swagger definitions (``ContactListArray``, ``ContactList``,
``ContactListPutPost``, ``Contacts``, ``ContactResource``, ``ActivityImport``,
``ActivityExportStatus``, ``ActivityListsMembership``, ``Activity``, ``Activities``); errors
follow ``APIErrorSchema`` (an array). Where the spec declares a 404 for an operation, unknown
referenced ids answer 404; elsewhere they are validation errors (400).

Handlers parse and validate outside the sandbox lock, then take it (settling due activities
first, see ``activities.settle``) only to read or change the account, and encode JSON after.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlencode

from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Request

from integrations.sandbox import activities
from integrations.sandbox.activities import EXPORT_FIELDS, Activity
from integrations.sandbox.clock import iso, parse_iso
from integrations.sandbox.oauth import Caller
from integrations.sandbox.responses import (
    NOT_FOUND_KEY,
    Reply,
    api_error,
    json_reply,
    not_found,
    too_many_queued_activities,
    validation_error,
)
from integrations.sandbox.state import (
    EMAIL_RE,
    PROFILE_FIELDS,
    PROFILE_INT_FIELDS,
    UUID_RE,
    Account,
    Contact,
    ContactList,
    Sandbox,
)

# CC's documented import and activity limits (REFERENCE.md §5.6-5.8).
MAX_IMPORT_CONTACTS = 40_000
MAX_IMPORT_LINES = 40_000  # CSV, header included
MAX_IMPORT_BYTES = 4 * 1024 * 1024
MAX_ACTIVITY_LISTS = 50
MAX_ACTIVITY_CONTACT_IDS = 500
MAX_EXPORT_EXCLUDE = 50

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
ACTIVITY_STATES = ("processing", "completed", "cancelled", "failed", "timed_out")
SMS_STATUSES = ("all", "explicit", "unsubscribed", "pending_confirmation", "not_set")
IMPORT_PERMISSIONS = ("explicit", "not_set")
CONFLICT_KEY = "contacts.api.conflict"
UNSUPPORTED_MEDIA_KEY = "contacts.api.unsupported_media_type"
ACTIVITY_NOT_FOUND = "Resource not found for the activity_id provided"
CURSOR_RE = re.compile(r"^[A-Za-z0-9_-]+$")


class Invalid(Exception):
    """A request the spec calls invalid; carries the reply to send."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


def _invalid(message: str) -> Invalid:
    return Invalid(validation_error(message))


@dataclass
class Ctx:
    sandbox: Sandbox
    request: Request
    caller: Caller
    params: dict[str, str] = field(default_factory=dict)

    @property
    def account(self) -> Account:
        return self.caller.account

    @contextmanager
    def data(self) -> Iterator[Account]:
        """Hold the sandbox lock with the account's due activities applied."""
        with self.sandbox.lock:
            activities.settle(self.sandbox, self.account)
            yield self.account


# --- parameter helpers -----------------------------------------------------------------------
def _encode_cursor(query: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(urlencode(query).encode()).decode().rstrip("=")


def _query(request: Request) -> MultiDict:
    """The query, or the one a ``cursor`` stands for (cursors carry every parameter)."""
    cursor = request.args.get("cursor")
    if cursor is None:
        return request.args
    try:
        if not CURSOR_RE.match(cursor):
            raise ValueError(cursor)
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        return MultiDict(parse_qsl(raw, keep_blank_values=True, strict_parsing=True))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _invalid("cursor is not valid.") from None


def _limit(args: MultiDict, maximum: int, default: int = 50) -> int:
    raw = args.get("limit")
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _invalid("limit must be a whole number.") from None
    if not 1 <= value <= maximum:
        raise _invalid(f"limit must be from 1 to {maximum}.")
    return value


def _offset(args: MultiDict, name: str = "offset") -> int:
    try:
        return max(0, int(args.get(name, 0)))
    except ValueError:
        raise _invalid("cursor is not valid.") from None


def _after(args: MultiDict) -> int:
    """The ``seq`` of the last contact already returned (cursor), or -1."""
    try:
        return int(args.get("after", -1))
    except ValueError:
        raise _invalid("cursor is not valid.") from None


def _bool(args: MultiDict, name: str) -> bool:
    raw = args.get(name)
    if raw is None:
        return False
    if raw.lower() not in ("true", "false"):
        raise _invalid(f"{name} does not have a valid value")
    return raw.lower() == "true"


def _choice(args: MultiDict, name: str, allowed: tuple[str, ...]) -> str | None:
    raw = args.get(name)
    if raw is not None and raw not in allowed:
        raise _invalid(f"{name} does not have a valid value")
    return raw


def _csv_choices(args: MultiDict, name: str, allowed: tuple[str, ...]) -> list[str]:
    raw = args.get(name)
    if raw is None:
        return []
    values = [value.strip() for value in raw.split(",") if value.strip()]
    if not values or any(value not in allowed for value in values):
        raise _invalid(f"{name} does not have a valid value")
    return values


def _date_param(args: MultiDict, name: str) -> float | None:
    raw = args.get(name)
    if raw is None:
        return None
    try:
        return parse_iso(raw)
    except ValueError:
        raise _invalid(f"{name} must be an ISO-8601 date-time.") from None


def _next_link(path: str, args: MultiDict, **position: int) -> dict[str, Any]:
    query = {k: v for k, v in args.items() if k not in ("cursor", *position)}
    query.update({k: str(v) for k, v in position.items()})
    return {"next": {"href": f"{path}?cursor={_encode_cursor(query)}"}}


def _json_body(request: Request, *, allow_empty: bool = False) -> Any:
    data = request.get_data(cache=True)
    if allow_empty and not data.strip():
        return {}
    if request.mimetype != "application/json" and not request.mimetype.endswith("+json"):
        raise Invalid(
            api_error(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                UNSUPPORTED_MEDIA_KEY,
                "The payload must be in JSON format, and Content-Type must be application/json.",
            )
        )
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise _invalid("The request body is not valid JSON.") from None


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _invalid("The request body must be a JSON object.")
    return body


def _id_list(
    value: Any, name: str, *, maximum: int, minimum: int = 0, uuids: bool = True
) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _invalid(f"{name} must be an array of strings.")
    if len(value) > maximum:
        raise _invalid(f"{name} may contain at most {maximum} items; it has {len(value)}.")
    if len(value) < minimum:
        raise _invalid(f"{name} must contain at least {minimum} item(s).")
    if uuids:
        bad = [item for item in value if not UUID_RE.match(item)]
        if bad:
            raise _invalid(f"{name} contains an invalid id: {bad[0]!r}.")
    return list(dict.fromkeys(value))


def _known_lists(account: Account, list_ids: list[str], name: str, *, status: int) -> None:
    missing = [list_id for list_id in list_ids if list_id not in account.lists]
    if missing:
        message = f"{name} contains a list_id that does not exist: {missing[0]}."
        if status == HTTPStatus.NOT_FOUND:
            raise Invalid(not_found(message))
        raise _invalid(message)


def _check_queue(sandbox: Sandbox, account: Account) -> None:
    if activities.queued_count(account) >= sandbox.options.max_queued_activities:
        raise Invalid(too_many_queued_activities())


# --- representations -------------------------------------------------------------------------
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


# --- contact lists ---------------------------------------------------------------------------
def list_lists(ctx: Ctx) -> Reply:
    args = _query(ctx.request)
    limit = _limit(args, 1000)
    include_count = _bool(args, "include_count")
    count = _choice(args, "include_membership_count", ("all", "active"))
    statuses = _csv_choices(args, "status", ("all", "active", "deleted"))
    _choice(args, "channel_type", ("email", "sms"))
    name = args.get("name")
    offset = _offset(args)
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
            body["_links"] = _next_link("/v3/contact_lists", args, offset=offset + limit)
    return json_reply(body)


def create_list(ctx: Ctx) -> Reply:
    body = _object(_json_body(ctx.request))
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _invalid("name is required.")
    if len(name) > 255:
        raise _invalid("name must be at most 255 characters.")
    favorite = body.get("favorite", False)
    description = body.get("description")
    if not isinstance(favorite, bool):
        raise _invalid("favorite must be true or false.")
    if description is not None and not isinstance(description, str):
        raise _invalid("description must be a string.")
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
    count = _choice(ctx.request.args, "include_membership_count", ("all", "active"))
    list_id = ctx.params["list_id"]
    if not UUID_RE.match(list_id):
        return not_found("list_id is in an invalid format.")
    with ctx.data() as account:
        contact_list = account.lists.get(list_id)
        if contact_list is None:
            return not_found(f"Contact list {list_id} was not found.")
        data = list_json(contact_list, account, count)
    return json_reply(data)


# --- contacts --------------------------------------------------------------------------------
def list_contacts(ctx: Ctx) -> Reply:
    args = _query(ctx.request)
    limit = _limit(args, 500)
    statuses = set(_csv_choices(args, "status", CONTACT_STATUSES))
    includes = _csv_choices(args, "include", CONTACT_INCLUDES)
    _csv_choices(args, "sms_status", SMS_STATUSES)
    include_count = _bool(args, "include_count")
    email = args.get("email")
    list_filter = [v.strip() for v in args.get("lists", "").split(",") if v.strip()]
    if len(list_filter) > 25:
        raise _invalid("lists may contain at most 25 list ids.")
    tags = [v for v in args.get("tags", "").split(",") if v.strip()]
    if len(tags) > 50:
        raise _invalid("tags may contain at most 50 tag ids.")
    bounds: list[tuple[str, bool, float]] = []  # (attribute, is a lower bound, value)
    for name in DATE_FILTERS:
        bound = _date_param(args, name)
        if bound is not None:
            attr = "opt_out_date" if name.startswith("optout") else f"{name.split('_')[0]}_at"
            bounds.append((attr, name.endswith("_after"), bound))
    after = _after(args)
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
            body["_links"] = _next_link("/v3/contacts", args, after=page[-1].seq)
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
    body = _object(_json_body(ctx.request))
    if body.get("create_source") not in ("Account", "Contact"):
        raise _invalid("create_source is required and must be Account or Contact.")
    email_address = body.get("email_address")
    # CC also accepts contacts with only a name or an SMS channel; the sandbox keys every
    # contact by email, so it requires one.
    if not isinstance(email_address, dict) or not isinstance(email_address.get("address"), str):
        raise _invalid("email_address.address is required.")
    address = email_address["address"].strip()
    if len(address) > 80 or not EMAIL_RE.match(address):
        raise _invalid(f"email_address.address {address!r} is not a valid email address.")
    permission = email_address.get("permission_to_send", "implicit")
    if permission not in PERMISSIONS:
        raise _invalid("email_address.permission_to_send does not have a valid value")
    profile: dict[str, Any] = {}
    for name in PROFILE_FIELDS:
        if name in body:
            value = body[name]
            limit = 10 if name == "anniversary" else 50
            if not isinstance(value, str) or len(value) > limit:
                raise _invalid(f"{name} must be a string of at most {limit} characters.")
            profile[name] = value
    for name in PROFILE_INT_FIELDS:
        if name in body:
            value = body[name]
            top = 12 if name == "birthday_month" else 31
            if not isinstance(value, int) or not 1 <= value <= top:
                raise _invalid(f"{name} must be a whole number from 1 to {top}.")
            profile[name] = value
    list_ids = _id_list(body.get("list_memberships", []), "list_memberships", maximum=50)
    with ctx.data() as account:
        _known_lists(account, list_ids, "list_memberships", status=HTTPStatus.BAD_REQUEST)
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
    includes = _csv_choices(ctx.request.args, "include", CONTACT_INCLUDES)
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


# --- activities ------------------------------------------------------------------------------
def _activity_reply(ctx: Ctx, activity: Activity, status: int = HTTPStatus.CREATED) -> Reply:
    # A new activity is shown as CC shows it in the 201: "initialized", 0 % done.
    at = activity.created_at if status == HTTPStatus.CREATED else ctx.sandbox.now()
    return json_reply(activities.activity_json(activity, at), status)


# Which other filters each export filter may be combined with (ContactsExport descriptions).
EXPORT_COMBINATIONS = {
    "contact_ids": {"status"},
    "list_ids": {"status", "exclude", "new_subscriber"},
    "segment_id": set(),
    "tag_ids": set(),
    "new_subscriber": {"list_ids", "exclude"},
    "status": {"contact_ids", "list_ids"},
    "exclude": {"list_ids", "new_subscriber"},
}
EXPORT_STATUSES = ("all", "active", "unsubscribed", "removed")


def create_export(ctx: Ctx) -> Reply:
    body = _object(_json_body(ctx.request, allow_empty=True))
    filters = [
        name for name in EXPORT_COMBINATIONS if body.get(name) not in (None, False, [], {}, "")
    ]
    for name in filters:
        clash = [
            other for other in filters if other != name and other not in EXPORT_COMBINATIONS[name]
        ]
        if clash:
            raise _invalid(f"{name} cannot be combined with {clash[0]}.")
    contact_ids = _id_list(
        body.get("contact_ids", []), "contact_ids", maximum=MAX_ACTIVITY_CONTACT_IDS
    )
    list_ids = _id_list(body.get("list_ids", []), "list_ids", maximum=MAX_ACTIVITY_LISTS)
    _id_list(body.get("tag_ids", []), "tag_ids", maximum=50)
    exclude = body.get("exclude") or {}
    if not isinstance(exclude, dict):
        raise _invalid("exclude must be an object.")
    excluded = set(
        _id_list(exclude.get("contact_ids", []), "exclude.contact_ids", maximum=MAX_EXPORT_EXCLUDE)
    )
    status = body.get("status")
    if status is not None and status not in EXPORT_STATUSES:
        raise _invalid("status does not have a valid value")
    new_subscriber = body.get("new_subscriber", False)
    if not isinstance(new_subscriber, bool):
        raise _invalid("new_subscriber must be true or false.")
    fields = body.get("fields")
    if fields is None:
        fields = list(EXPORT_FIELDS)
    else:
        fields = _id_list(fields, "fields", maximum=len(EXPORT_FIELDS), minimum=1, uuids=False)
        unknown = [name for name in fields if name not in EXPORT_FIELDS]
        if unknown:
            raise _invalid(f"fields contains an unsupported field: {unknown[0]!r}.")
        if "email_address" not in fields and any(name.startswith("email_opt") for name in fields):
            raise _invalid("email_address must be exported to export opt-in/opt-out fields.")
    if body.get("segment_id") is not None:
        return not_found("segment_id was not found.")
    with ctx.data() as account:
        _known_lists(account, list_ids, "list_ids", status=HTTPStatus.NOT_FOUND)
        missing = [cid for cid in contact_ids if cid not in account.contacts_by_id]
        if missing:
            return not_found(f"contact_id {missing[0]} was not found.")
        if body.get("tag_ids"):
            selected: list[Contact] = []
        elif contact_ids:
            selected = [account.contacts_by_id[cid] for cid in contact_ids]
        elif list_ids:
            ids: set[str] = set()
            for list_id in list_ids:
                ids.update(account.lists[list_id].members)
            selected = sorted((account.contacts_by_id[i] for i in ids), key=lambda c: c.seq)
        else:
            selected = list(account.contacts)
        horizon = ctx.sandbox.now() - 30 * 86_400
        selected = [
            c
            for c in selected
            if c.contact_id not in excluded
            and (status in (None, "all") or (status == "unsubscribed") == c.is_unsubscribed)
            and status != "removed"
            and (not new_subscriber or c.created_at >= horizon)
        ]
        _check_queue(ctx.sandbox, account)
        activity = activities.queue(
            ctx.sandbox,
            account,
            activities.EXPORT,
            items=len(selected),
            contact_ids=[c.contact_id for c in selected],
            export_fields=fields,
        )
        return _activity_reply(ctx, activity)


def get_export(ctx: Ctx) -> Reply:
    export_id = ctx.params["file_export_id"]
    with ctx.data() as account:
        activity = account.activities.get(export_id)
        if activity is None or activity.kind != activities.EXPORT:
            return not_found(f"Export file {export_id} was not found.")
        # The spec lists the queued-activity 429 for this download too (getContactsExport).
        _check_queue(ctx.sandbox, account)
        if activity.csv is None:
            # Undocumented by CC; the sandbox answers 404 (a code the spec declares here) with
            # a message that says the file is not ready yet.
            return api_error(
                HTTPStatus.NOT_FOUND,
                NOT_FOUND_KEY,
                f"The export file is not ready: activity {export_id} has not completed yet.",
            )
        data = activity.csv
    return Reply(
        HTTPStatus.OK,
        data,
        "text/csv; charset=utf-8",
        [("Content-Disposition", f'attachment; filename="contacts-{export_id}.csv"')],
    )


# JsonImportContact keys; the spec spells one "home country" (sic), accepted as home_country.
IMPORT_COLUMNS = frozenset(
    {
        "email",
        "first_name",
        "last_name",
        "job_title",
        "company_name",
        "birthday_month",
        "birthday_day",
        "anniversary",
        "phone",
        "home_phone",
        "work_phone",
        "mobile_phone",
        "other_phone",
        "street",
        "street2",
        "city",
        "state",
        "zip",
        "country",
        "sms_number",
        "sms_consent_date",
    }
    | {
        f"{kind}_{part}"
        for kind in ("home", "work", "other")
        for part in ("street", "street2", "city", "state", "zip", "country")
    }
)


def _import_row(raw: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.strip().lower().replace(" ", "_")
        if name == "email_address":
            name = "email"
        # Custom fields (cf:*) and unknown columns are ignored: the sandbox models neither.
        if isinstance(value, str):
            value = value.strip()
        # Empty cells are "not supplied": an import never blanks a field.
        if name in IMPORT_COLUMNS and value not in (None, ""):
            row[name] = value
    return row


def json_import(ctx: Ctx) -> Reply:
    raw = ctx.request.get_data(cache=True)
    if len(raw) >= MAX_IMPORT_BYTES:
        # CC: the payload must be smaller than 4 MB (REFERENCE.md §5.6).
        raise _invalid("The request payload must be smaller than 4 MB.")
    body = _object(_json_body(ctx.request))
    data = body.get("import_data")
    if not isinstance(data, list) or not data:
        raise _invalid("import_data is required and must contain at least one contact.")
    if len(data) > MAX_IMPORT_CONTACTS:
        raise _invalid(f"import_data may contain at most 40,000 contacts; it has {len(data)}.")
    if not all(isinstance(item, dict) for item in data):
        raise _invalid("Each import_data item must be an object.")
    list_ids = (
        _id_list(body.get("list_ids"), "list_ids", maximum=MAX_ACTIVITY_LISTS, minimum=1)
        if "list_ids" in body
        else None
    )
    if list_ids is None:
        raise _invalid("list_ids is required.")
    if body.get("sms_permission_to_send") not in (None, *IMPORT_PERMISSIONS):
        raise _invalid("sms_permission_to_send does not have a valid value")
    rows = [(f"import_data[{i}]", _import_row(item)) for i, item in enumerate(data)]
    with ctx.data() as account:
        _known_lists(account, list_ids, "list_ids", status=HTTPStatus.BAD_REQUEST)
        _check_queue(ctx.sandbox, account)
        activity = activities.queue(
            ctx.sandbox,
            account,
            activities.JSON_IMPORT,
            items=len(rows),
            rows=rows,
            list_ids=list_ids,
            person_count=len(rows),
        )
        return _activity_reply(ctx, activity)


def file_import(ctx: Ctx) -> Reply:
    request = ctx.request
    if request.mimetype != "multipart/form-data":
        raise Invalid(
            api_error(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                UNSUPPORTED_MEDIA_KEY,
                "This endpoint requires that Content-Type be unspecified (multipart/form-data).",
            )
        )
    upload = request.files.get("file")
    if upload is None:
        raise _invalid("file is required.")
    filename = upload.filename or "contacts.csv"
    if not filename.lower().endswith(".csv") and upload.mimetype != "text/csv":
        raise Invalid(
            api_error(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                UNSUPPORTED_MEDIA_KEY,
                "Wrong file format, upload file must be of type .csv",
            )
        )
    raw_ids = request.form.get("list_ids")
    if not raw_ids:
        raise _invalid("list_ids is required.")
    # One form field, comma-separated (swagger: type string, format csv, maxItems 50).
    list_ids = _id_list(
        [v.strip() for v in raw_ids.split(",") if v.strip()],
        "list_ids",
        maximum=MAX_ACTIVITY_LISTS,
        minimum=1,
    )
    if request.form.get("sms_permission_to_send") not in (None, *IMPORT_PERMISSIONS):
        raise _invalid("sms_permission_to_send does not have a valid value")
    content = upload.stream.read(MAX_IMPORT_BYTES + 1)
    if len(content) > MAX_IMPORT_BYTES:
        raise _invalid("The file must be at most 4 MB.")
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = content.decode("latin-1")
    records = [record for record in csv.reader(io.StringIO(text)) if any(c.strip() for c in record)]
    if not records:
        raise _invalid("The file is empty.")
    if len(records) > MAX_IMPORT_LINES:
        raise _invalid(
            "The file may contain at most 40,000 lines including the header; "
            f"it has {len(records)}."
        )
    header = [_import_header(name) for name in records[0]]
    if "email" not in header and "sms_number" not in header:
        raise _invalid("The file must have an email column.")
    rows = [
        (f"line {number}", _import_row(dict(zip(header, record, strict=False))))
        for number, record in enumerate(records[1:], start=2)
    ]
    with ctx.data() as account:
        _known_lists(account, list_ids, "list_ids", status=HTTPStatus.NOT_FOUND)
        _check_queue(ctx.sandbox, account)
        activity = activities.queue(
            ctx.sandbox,
            account,
            activities.FILE_IMPORT,
            items=len(records),
            rows=rows,
            list_ids=list_ids,
            person_count=len(rows),
            source_file_name=filename,
        )
        return _activity_reply(ctx, activity)


def _import_header(name: str) -> str:
    name = name.strip().lower().replace(" ", "_")
    return "email" if name == "email_address" else name


def _membership(ctx: Ctx, kind: str) -> Reply:
    body = _object(_json_body(ctx.request))
    missing_status = (
        HTTPStatus.NOT_FOUND if kind == activities.REMOVE_MEMBERSHIPS else HTTPStatus.BAD_REQUEST
    )
    if "list_ids" not in body:
        raise _invalid("list_ids is required.")
    targets = _id_list(body["list_ids"], "list_ids", maximum=MAX_ACTIVITY_LISTS, minimum=1)
    source = body.get("source")
    if not isinstance(source, dict):
        raise _invalid("source is required.")
    given = [key for key, value in source.items() if value not in (None, False, [])]
    if len(given) != 1:
        raise _invalid(
            "source must have exactly one of contact_ids, list_ids, all_active_contacts, "
            "tag_ids, segment_id, engagement_level."
        )
    kind_of_source = given[0]
    if kind_of_source in ("segment_id", "engagement_level"):
        raise _invalid(f"source.{kind_of_source} is not supported by the sandbox.")
    if kind_of_source not in ("contact_ids", "list_ids", "all_active_contacts", "tag_ids"):
        raise _invalid(f"source.{kind_of_source} is not a valid source.")
    if kind_of_source == "all_active_contacts" and source[kind_of_source] is not True:
        raise _invalid("source.all_active_contacts must be true.")
    source_ids: list[str] = []
    if kind_of_source == "contact_ids":
        source_ids = _id_list(
            source["contact_ids"], "source.contact_ids", maximum=MAX_ACTIVITY_CONTACT_IDS
        )
    elif kind_of_source == "list_ids":
        source_ids = _id_list(source["list_ids"], "source.list_ids", maximum=MAX_ACTIVITY_LISTS)
    elif kind_of_source == "tag_ids":
        _id_list(source["tag_ids"], "source.tag_ids", maximum=50)
    exclude = body.get("exclude") or {}
    if not isinstance(exclude, dict):
        raise _invalid("exclude must be an object.")
    excluded = _id_list(exclude.get("contact_ids", []), "exclude.contact_ids", maximum=10_000)
    if excluded and kind_of_source not in ("all_active_contacts", "list_ids"):
        raise _invalid("exclude is only allowed with source all_active_contacts or list_ids.")
    with ctx.data() as account:
        _known_lists(account, targets, "list_ids", status=missing_status)
        if kind_of_source == "contact_ids":
            contact_ids = source_ids
        elif kind_of_source == "list_ids":
            _known_lists(account, source_ids, "source.list_ids", status=missing_status)
            members: set[str] = set()
            for list_id in source_ids:
                members.update(account.lists[list_id].members)
            by_id = account.contacts_by_id
            contact_ids = [
                c.contact_id for c in sorted((by_id[i] for i in members), key=lambda c: c.seq)
            ]
        elif kind_of_source == "all_active_contacts":
            contact_ids = [c.contact_id for c in account.contacts if not c.is_unsubscribed]
        else:
            contact_ids = []  # the sandbox models no tags
        if excluded:
            skip = set(excluded)
            contact_ids = [cid for cid in contact_ids if cid not in skip]
        _check_queue(ctx.sandbox, account)
        activity = activities.queue(
            ctx.sandbox,
            account,
            kind,
            items=len(contact_ids),
            contact_ids=contact_ids,
            list_ids=targets,
        )
        return _activity_reply(ctx, activity)


def add_memberships(ctx: Ctx) -> Reply:
    return _membership(ctx, activities.ADD_MEMBERSHIPS)


def remove_memberships(ctx: Ctx) -> Reply:
    return _membership(ctx, activities.REMOVE_MEMBERSHIPS)


def list_activities(ctx: Ctx) -> Reply:
    args = _query(ctx.request)
    limit = _limit(args, 500)
    state = _choice(args, "state", ACTIVITY_STATES)
    offset = _offset(args)
    now = ctx.sandbox.now()
    with ctx.data() as account:
        found = [
            a
            for a in reversed(account.activities.values())
            if state is None or a.state(now) == state
        ]
        page = found[offset : offset + limit]
        body: dict[str, Any] = {"activities": [activities.activity_json(a, now) for a in page]}
        if offset + limit < len(found):
            body["_links"] = _next_link("/v3/activities", args, offset=offset + limit)
    return json_reply(body)


def get_activity(ctx: Ctx) -> Reply:
    activity_id = ctx.params["activity_id"]
    with ctx.data() as account:
        activity = account.activities.get(activity_id)
        if activity is None:
            return not_found(ACTIVITY_NOT_FOUND)
        return _activity_reply(ctx, activity, HTTPStatus.OK)


# --- routing ---------------------------------------------------------------------------------
Handler = Callable[[Ctx], Reply]


@dataclass(frozen=True)
class Route:
    template: str  # e.g. "/v3/contacts/{contact_id}", used in stats
    pattern: re.Pattern[str]
    methods: dict[str, Handler]


def _route(template: str, methods: dict[str, Handler]) -> Route:
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
    return Route(template, re.compile(f"^{regex}/?$"), methods)


ROUTES = (
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
    except Invalid as invalid:
        return invalid.reply

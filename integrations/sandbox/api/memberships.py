"""List memberships: ``POST /v3/activities/add_list_memberships`` and
``POST /v3/activities/remove_list_memberships`` queue an ``ActivityListsMembership``.

The source (contact ids, lists, all active contacts or tags) is resolved when the activity is
created; the change is applied when it completes (``activities``).

Reference: https://developer.constantcontact.com/api_guide/bulk_activities.html
Reference: https://developer.constantcontact.com/api_reference/index.html#!/Bulk_Activities/postListRemoveContact
"""

from __future__ import annotations

from http import HTTPStatus

from integrations.constant_contact.limits import ACTIVITY_CONTACT_IDS_MAX, ACTIVITY_LISTS_MAX
from integrations.sandbox import activities
from integrations.sandbox.api.common import (
    Ctx,
    activity_reply,
    check_queue,
    id_list,
    invalid,
    json_body,
    json_object,
    known_lists,
)
from integrations.sandbox.responses import Reply

SOURCES = ("contact_ids", "list_ids", "all_active_contacts", "tag_ids")
UNSUPPORTED_SOURCES = ("segment_id", "engagement_level")


def _membership(ctx: Ctx, kind: str) -> Reply:
    body = json_object(json_body(ctx.request))
    missing_status = (
        HTTPStatus.NOT_FOUND if kind == activities.REMOVE_MEMBERSHIPS else HTTPStatus.BAD_REQUEST
    )
    if "list_ids" not in body:
        raise invalid("list_ids is required.")
    targets = id_list(body["list_ids"], "list_ids", maximum=ACTIVITY_LISTS_MAX, minimum=1)
    source = body.get("source")
    if not isinstance(source, dict):
        raise invalid("source is required.")
    given = [key for key, value in source.items() if value not in (None, False, [])]
    if len(given) != 1:
        raise invalid(
            "source must have exactly one of contact_ids, list_ids, all_active_contacts, "
            "tag_ids, segment_id, engagement_level."
        )
    kind_of_source = given[0]
    if kind_of_source in UNSUPPORTED_SOURCES:
        raise invalid(f"source.{kind_of_source} is not supported by the sandbox.")
    if kind_of_source not in SOURCES:
        raise invalid(f"source.{kind_of_source} is not a valid source.")
    if kind_of_source == "all_active_contacts" and source[kind_of_source] is not True:
        raise invalid("source.all_active_contacts must be true.")
    source_ids: list[str] = []
    if kind_of_source == "contact_ids":
        source_ids = id_list(
            source["contact_ids"], "source.contact_ids", maximum=ACTIVITY_CONTACT_IDS_MAX
        )
    elif kind_of_source == "list_ids":
        source_ids = id_list(source["list_ids"], "source.list_ids", maximum=ACTIVITY_LISTS_MAX)
    elif kind_of_source == "tag_ids":
        id_list(source["tag_ids"], "source.tag_ids", maximum=50)
    exclude = body.get("exclude") or {}
    if not isinstance(exclude, dict):
        raise invalid("exclude must be an object.")
    excluded = id_list(exclude.get("contact_ids", []), "exclude.contact_ids", maximum=10_000)
    if excluded and kind_of_source not in ("all_active_contacts", "list_ids"):
        raise invalid("exclude is only allowed with source all_active_contacts or list_ids.")
    with ctx.data() as account:
        known_lists(account, targets, "list_ids", status=missing_status)
        if kind_of_source == "contact_ids":
            contact_ids = source_ids
        elif kind_of_source == "list_ids":
            known_lists(account, source_ids, "source.list_ids", status=missing_status)
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
        check_queue(ctx.sandbox, account)
        activity = activities.queue(
            ctx.sandbox,
            account,
            kind,
            items=len(contact_ids),
            contact_ids=contact_ids,
            list_ids=targets,
        )
        return activity_reply(ctx, activity)


def add_memberships(ctx: Ctx) -> Reply:
    return _membership(ctx, activities.ADD_MEMBERSHIPS)


def remove_memberships(ctx: Ctx) -> Reply:
    return _membership(ctx, activities.REMOVE_MEMBERSHIPS)

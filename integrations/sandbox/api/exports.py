"""Contact exports: ``POST /v3/activities/contact_exports`` queues an export activity
(``ActivityExportStatus``); ``GET /v3/contact_exports/{file_export_id}`` downloads its CSV once
it has completed.

Reference: https://developer.constantcontact.com/api_guide/export_contacts.html
Reference: https://developer.constantcontact.com/api_reference/index.html#!/Bulk_Activities/postContactsExport
Reference: https://developer.constantcontact.com/api_reference/index.html#!/Bulk_Activities/getContactsExport
"""

from __future__ import annotations

from http import HTTPStatus

from integrations.constant_contact.limits import (
    ACTIVITY_CONTACT_IDS_MAX,
    ACTIVITY_LISTS_MAX,
    EXPORT_EXCLUDE_MAX,
)
from integrations.sandbox import activities
from integrations.sandbox.activities import EXPORT_FIELDS
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
from integrations.sandbox.responses import NOT_FOUND_KEY, Reply, api_error, not_found
from integrations.sandbox.state import Contact

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
    body = json_object(json_body(ctx.request, allow_empty=True))
    filters = [
        name for name in EXPORT_COMBINATIONS if body.get(name) not in (None, False, [], {}, "")
    ]
    for name in filters:
        clash = [
            other for other in filters if other != name and other not in EXPORT_COMBINATIONS[name]
        ]
        if clash:
            raise invalid(f"{name} cannot be combined with {clash[0]}.")
    contact_ids = id_list(
        body.get("contact_ids", []), "contact_ids", maximum=ACTIVITY_CONTACT_IDS_MAX
    )
    list_ids = id_list(body.get("list_ids", []), "list_ids", maximum=ACTIVITY_LISTS_MAX)
    id_list(body.get("tag_ids", []), "tag_ids", maximum=50)
    exclude = body.get("exclude") or {}
    if not isinstance(exclude, dict):
        raise invalid("exclude must be an object.")
    excluded = set(
        id_list(exclude.get("contact_ids", []), "exclude.contact_ids", maximum=EXPORT_EXCLUDE_MAX)
    )
    status = body.get("status")
    if status is not None and status not in EXPORT_STATUSES:
        raise invalid("status does not have a valid value")
    new_subscriber = body.get("new_subscriber", False)
    if not isinstance(new_subscriber, bool):
        raise invalid("new_subscriber must be true or false.")
    fields = body.get("fields")
    if fields is None:
        fields = list(EXPORT_FIELDS)
    else:
        fields = id_list(fields, "fields", maximum=len(EXPORT_FIELDS), minimum=1, uuids=False)
        unknown = [name for name in fields if name not in EXPORT_FIELDS]
        if unknown:
            raise invalid(f"fields contains an unsupported field: {unknown[0]!r}.")
        if "email_address" not in fields and any(name.startswith("email_opt") for name in fields):
            raise invalid("email_address must be exported to export opt-in/opt-out fields.")
    if body.get("segment_id") is not None:
        return not_found("segment_id was not found.")
    with ctx.data() as account:
        known_lists(account, list_ids, "list_ids", status=HTTPStatus.NOT_FOUND)
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
        check_queue(ctx.sandbox, account)
        activity = activities.queue(
            ctx.sandbox,
            account,
            activities.EXPORT,
            items=len(selected),
            contact_ids=[c.contact_id for c in selected],
            export_fields=fields,
        )
        return activity_reply(ctx, activity)


def get_export(ctx: Ctx) -> Reply:
    export_id = ctx.params["file_export_id"]
    with ctx.data() as account:
        activity = account.activities.get(export_id)
        if activity is None or activity.kind != activities.EXPORT:
            return not_found(f"Export file {export_id} was not found.")
        # The spec lists the queued-activity 429 for this download too (getContactsExport).
        check_queue(ctx.sandbox, account)
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

"""Bulk activities: queued on POST, progressing on the sandbox clock, effects applied once.

An activity is created ``initialized``, becomes ``processing`` after
``activity_start_delay_seconds`` and completes after ``items / activity_items_per_second``
seconds (at least ``activity_min_seconds``); ``percent_done`` rises with it. Progress is
computed lazily from the sandbox clock: before any API or control request touches an account,
:func:`settle` applies the effects of every activity whose completion time has passed, in
completion order, exactly once. So effects land whether or not anyone polls, advancing the
clock completes activities at once, and big jobs overtake none of the small ones queued after
them (CC does not run activities in the order they were submitted).

Import semantics: contacts are matched by email, case-insensitively; only supplied, non-empty
fields are updated; new contacts get ``permission_to_send: implicit`` and
``opt_in_source: Account``; unsubscribed contacts are not added to lists and are counted in
``cannot_add_to_list_count``; rows without a valid email count in ``error_count`` with one
``activity_errors`` message each.

Reference: https://developer.constantcontact.com/api_guide/bulk_activities.html
Reference: https://developer.constantcontact.com/api_guide/activity_status.html
Reference: https://developer.constantcontact.com/api_guide/import_contacts.html
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import io
import json
import uuid
from typing import Any

from integrations.constant_contact.limits import (
    CONTACT_EMAIL_MAX_LENGTH,
    CUSTOM_FIELD_MAX_LENGTH,
    IMPORT_EMAIL_MAX_LENGTH,
    IMPORT_FIELD_MAX_LENGTHS,
    IMPORT_INTEGER_FIELDS,
)
from integrations.sandbox.activity_record import Activity
from integrations.sandbox.clock import iso
from integrations.sandbox.state import (
    EMAIL_RE,
    PROFILE_INT_FIELDS,
    Account,
    Contact,
    Sandbox,
)

JSON_IMPORT = "contacts_json_import"
FILE_IMPORT = "contacts_file_import"
EXPORT = "contact_exports"
ADD_MEMBERSHIPS = "add_list_memberships"
REMOVE_MEMBERSHIPS = "remove_list_memberships"
IMPORTS = (JSON_IMPORT, FILE_IMPORT)
MEMBERSHIPS = (ADD_MEMBERSHIPS, REMOVE_MEMBERSHIPS)
KINDS = (*IMPORTS, EXPORT, *MEMBERSHIPS)

# Export columns (the field names of CC's ``ContactsExport.fields``); the CSV header is each
# name humanized ("email_address" → "Email Address"), then "Contact Id", which the sandbox
# always appends. Reference: https://developer.constantcontact.com/api_guide/export_contacts.html
EXPORT_FIELDS = (
    "email_address",
    "first_name",
    "last_name",
    "job_title",
    "company_name",
    "birthday_month",
    "birthday_day",
    "anniversary",
    "email_lists",
    "source_name",
    "created_at",
    "updated_at",
    "email_optin_source",
    "email_optin_date",
    "email_optout_source",
    "email_optout_date",
    "email_optout_reason",
)
CONTACT_ID_HEADER = "Contact Id"


def humanize(field_name: str) -> str:
    return field_name.replace("_", " ").title()


def queue(sandbox: Sandbox, account: Account, kind: str, *, items: int, **details: Any) -> Activity:
    """Create an activity (caller holds the lock and has checked the queued-activity cap)."""
    options = sandbox.options
    now = sandbox.now()
    start_at = now + options.activity_start_delay_seconds
    duration = max(options.activity_min_seconds, items / options.activity_items_per_second)
    activity = Activity(
        activity_id=str(uuid.uuid4()),
        kind=kind,
        created_at=now,
        start_at=start_at,
        complete_at=start_at + duration,
        items_total=items,
        **details,
    )
    activity.fingerprint = fingerprint(activity)
    activity.end_state = sandbox.faults.take_activity(kind)
    account.activities[activity.activity_id] = activity
    account.activity_seq += 1
    heapq.heappush(
        account.pending, (activity.complete_at, account.activity_seq, activity.activity_id)
    )
    return activity


def queued_count(account: Account) -> int:
    """Non-terminal activities (call :func:`settle` first)."""
    return len(account.pending)


def settle(sandbox: Sandbox, account: Account) -> None:
    """Apply, once and in completion order, every activity due by now; drop activities older
    than the retention period (option ``activity_retention_days``; CC keeps them 10 days).
    Caller holds the lock."""
    now = sandbox.now()
    while account.pending and account.pending[0][0] <= now:
        _, _, activity_id = heapq.heappop(account.pending)
        activity = account.activities.get(activity_id)
        if activity is not None and not activity.completed:
            if activity.end_state is None:
                _apply(account, activity)
                activity.applied_at = activity.complete_at
            else:
                _end_badly(activity)
            activity.completed = True
    horizon = now - sandbox.options.activity_retention_days * 86_400
    while account.activities:
        oldest = next(iter(account.activities.values()))
        if oldest.created_at >= horizon or not oldest.completed:
            break
        del account.activities[oldest.activity_id]


def fingerprint(activity: Activity) -> str:
    """A digest of what ``activity`` does: its kind, target lists and contacts (emails for an
    import, ids for a membership change or an export)."""
    if activity.kind in IMPORTS:
        who = sorted(str(row.get("email", "")).strip().lower() for _, row in activity.rows)
    else:
        who = sorted(activity.contact_ids)
    payload = json.dumps([activity.kind, sorted(activity.list_ids), who])
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def applied_log(account: Account) -> dict[str, Any]:
    """Every activity the account still holds, oldest first, with whether it was applied,
    and how many applied imports or membership changes repeat one applied before them (the
    same request carried out twice). Caller holds the lock and has settled the account."""
    rows, seen, duplicates = [], set(), 0
    for activity in sorted(account.activities.values(), key=lambda a: a.created_at):
        applied = activity.applied_at is not None
        repeat = applied and activity.kind != EXPORT and activity.fingerprint in seen
        if applied and activity.kind != EXPORT:
            seen.add(activity.fingerprint)
        duplicates += int(repeat)
        rows.append(
            {
                "activity_id": activity.activity_id,
                "kind": activity.kind,
                "state": "completed" if applied else (activity.end_state or "pending"),
                "items": activity.items_total,
                "fingerprint": activity.fingerprint,
                "applied": applied,
                "repeats_an_applied_one": repeat,
            }
        )
    return {"activities": rows, "duplicates": duplicates}


def _end_badly(activity: Activity) -> None:
    """End in the injected state having applied nothing, as CC reports it."""
    activity.rows = []
    activity.contact_ids = []
    activity.person_count = 0
    activity.error(
        f"The activity {str(activity.end_state).replace('_', ' ')}; nothing was applied."
    )
    activity.error_count = 0  # no row was rejected: the activity as a whole ended


def _apply(account: Account, activity: Activity) -> None:
    if activity.kind in IMPORTS:
        _apply_import(account, activity)
    elif activity.kind == EXPORT:
        _apply_export(account, activity)
    else:
        _apply_membership(account, activity)


# --- imports ---------------------------------------------------------------------------------
def max_length(name: str) -> int:
    """The longest value CC accepts in import column ``name`` (``JsonImportContact``); columns
    the table does not list are capped like a custom field's value."""
    return IMPORT_FIELD_MAX_LENGTHS.get(name, CUSTOM_FIELD_MAX_LENGTH)


def row_problem(row: dict[str, Any], *, email_max: int) -> str | None:
    """Why a row cannot be imported, or None."""
    email = row.get("email")
    if not isinstance(email, str) or not email.strip():
        return "email is required"
    email = email.strip()
    if len(email) > email_max or not EMAIL_RE.match(email):
        return f"invalid email address {email!r}"
    for name, value in row.items():
        if name in PROFILE_INT_FIELDS:
            limit = IMPORT_INTEGER_FIELDS[name]
            try:
                number = int(value)
            except (TypeError, ValueError):
                return f"{name} must be a whole number"
            if not 1 <= number <= limit:
                return f"{name} must be from 1 to {limit}"
        elif name != "email":
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                return f"{name} must be a string"
            limit = max_length(name)
            if len(str(value)) > limit:
                return f"{name} is longer than {limit} characters"
    if ("birthday_month" in row) != ("birthday_day" in row):
        return "birthday_month and birthday_day must be given together"
    return None


def _apply_import(account: Account, activity: Activity) -> None:
    now = activity.complete_at
    # A JSON import row's email is capped shorter than a contact's; a CSV row's is not.
    email_max = (
        IMPORT_EMAIL_MAX_LENGTH if activity.kind == JSON_IMPORT else CONTACT_EMAIL_MAX_LENGTH
    )
    targets = [account.lists[i] for i in activity.list_ids if i in account.lists]
    for label, row in activity.rows:
        problem = row_problem(row, email_max=email_max)
        if problem:
            activity.error(f"{label}: {problem}")
            continue
        email = row["email"].strip()
        supplied = {
            name: (int(value) if name in PROFILE_INT_FIELDS else str(value))
            for name, value in row.items()
            if name != "email"
        }
        contact = account.find_contact(email)
        if contact is None:
            contact = account.create_contact(email, now=now, profile=supplied)
        elif supplied:
            contact.profile.update(supplied)
            contact.update_source = "Account"
            contact.updated_at = now
        if contact.is_unsubscribed:
            activity.cannot_add_to_list_count += 1
            continue
        for contact_list in targets:
            account.add_member(contact_list, contact, now=now)
    activity.rows = []  # the payload is no longer needed


# --- export ----------------------------------------------------------------------------------
def _export_value(account: Account, contact: Contact, name: str) -> str:
    if name == "email_address":
        return contact.email
    if name == "email_lists":
        return ", ".join(
            lst.name for lst in account.lists.values() if contact.contact_id in lst.members
        )
    if name == "source_name":
        return contact.create_source
    if name in ("created_at", "updated_at"):
        return iso(getattr(contact, name))
    if name == "email_optin_source":
        return contact.opt_in_source or ""
    if name == "email_optin_date":
        return iso(contact.opt_in_date) if contact.opt_in_date else ""
    if name == "email_optout_source":
        return contact.opt_out_source or ""
    if name == "email_optout_date":
        return iso(contact.opt_out_date) if contact.opt_out_date else ""
    if name == "email_optout_reason":
        return contact.opt_out_reason or ""
    value = contact.profile.get(name)
    return "" if value is None else str(value)


def _apply_export(account: Account, activity: Activity) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    fields = activity.export_fields
    writer.writerow([humanize(name) for name in fields] + [CONTACT_ID_HEADER])
    for contact_id in activity.contact_ids:
        contact = account.contacts_by_id.get(contact_id)
        if contact is not None:
            writer.writerow(
                [_export_value(account, contact, name) for name in fields] + [contact_id]
            )
    activity.csv = buffer.getvalue().encode()
    activity.contact_ids = []


# --- list memberships ------------------------------------------------------------------------
def _apply_membership(account: Account, activity: Activity) -> None:
    now = activity.complete_at
    targets = [account.lists[i] for i in activity.list_ids if i in account.lists]
    for contact_id in activity.contact_ids:
        contact = account.contacts_by_id.get(contact_id)
        if contact is None:
            activity.error(f"contact_id {contact_id} was not found.")
            continue
        for contact_list in targets:
            if activity.kind == REMOVE_MEMBERSHIPS:
                account.remove_member(contact_list, contact_id, now=now)
            elif not contact.is_unsubscribed:
                # Unsubscribed contacts are never put on lists, as in imports.
                account.add_member(contact_list, contact, now=now)
    activity.contact_ids = []


# --- rendering -------------------------------------------------------------------------------
def activity_json(activity: Activity, now: float) -> dict[str, Any]:
    """The activity as CC shows it (ActivityImport / ActivityExportStatus /
    ActivityListsMembership, all valid ``Activity`` objects)."""
    state, percent, fraction = activity.progress(now)
    href = f"/v3/activities/{activity.activity_id}"
    links: dict[str, Any] = {"self": {"href": href}}
    if activity.kind == EXPORT:
        links["results"] = {"href": f"/v3/contact_exports/{activity.activity_id}"}
    if activity.completed:
        updated = activity.complete_at
    elif state == "processing":
        updated = now
    else:
        updated = activity.created_at
    data: dict[str, Any] = {
        "activity_id": activity.activity_id,
        "state": state,
        "created_at": iso(activity.created_at),
        "updated_at": iso(updated),
        "percent_done": percent,
        "activity_errors": list(activity.errors),
        "status": _status(activity, fraction),
        "_links": links,
    }
    if state != "initialized":
        data["started_at"] = iso(activity.start_at)
    if activity.completed and not activity.ended_badly:
        data["completed_at"] = iso(activity.complete_at)
    if activity.source_file_name is not None:
        data["source_file_name"] = activity.source_file_name
    return data


def _status(activity: Activity, fraction: float) -> dict[str, int]:
    if activity.kind in IMPORTS:
        return {
            "items_total_count": activity.items_total,
            "person_count": activity.person_count,
            "error_count": activity.error_count,
            "correctable_count": 0,
            "cannot_add_to_list_count": activity.cannot_add_to_list_count,
        }
    status = {
        "items_total_count": activity.items_total,
        "items_completed_count": int(activity.items_total * fraction),
    }
    if activity.kind in MEMBERSHIPS:
        status["list_count"] = len(activity.list_ids)
    return status

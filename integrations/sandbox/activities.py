"""Bulk activities: queued on POST, progressing on the sandbox clock, effects applied once.

An activity is created ``initialized``, becomes ``processing`` after
``activity_start_delay_seconds`` and completes after ``items / activity_items_per_second``
seconds (at least ``activity_min_seconds``); ``percent_done`` rises with it. Progress is
computed lazily from the sandbox clock: before any API or control request touches an account,
:func:`settle` applies the effects of every activity whose completion time has passed, in
completion order, exactly once. So effects land whether or not anyone polls, advancing the
clock completes activities at once, and big jobs overtake none of the small ones queued after
them (CC runs jobs "not in submission order", REFERENCE.md §5.1).

Import semantics (REFERENCE.md §5.6): contacts are matched by email, case-insensitively; only
supplied, non-empty fields are updated; new contacts get ``permission_to_send: implicit`` and
``opt_in_source: Account``; unsubscribed contacts are not added to lists and are counted in
``cannot_add_to_list_count``; rows without a valid email count in ``error_count`` with one
``activity_errors`` message each.
"""

from __future__ import annotations

import csv
import heapq
import io
import uuid
from dataclasses import dataclass, field
from typing import Any

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

TERMINAL_STATES = ("completed", "cancelled", "failed", "timed_out")
MAX_REPORTED_ERRORS = 500

# Export columns (REFERENCE.md §5.4's field names); the CSV header is each name humanized
# ("email_address" → "Email Address"), then "Contact Id", which the sandbox always appends.
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


@dataclass(eq=False)
class Activity:
    activity_id: str
    kind: str
    created_at: float
    start_at: float
    complete_at: float
    items_total: int
    # Imports: rows (dicts) with their labels; exports: contact ids; memberships: contact ids.
    rows: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    contact_ids: list[str] = field(default_factory=list)
    list_ids: list[str] = field(default_factory=list)  # target lists
    export_fields: list[str] = field(default_factory=list)
    source_file_name: str | None = None
    person_count: int = 0
    error_count: int = 0
    cannot_add_to_list_count: int = 0
    errors: list[str] = field(default_factory=list)
    completed: bool = False
    csv: bytes | None = None

    def progress(self, now: float) -> tuple[str, int, float]:
        """(state, percent_done, fraction done) at sandbox time ``now``."""
        if self.completed:
            return "completed", 100, 1.0
        if now <= self.start_at:
            return "initialized", 0, 0.0
        duration = self.complete_at - self.start_at
        fraction = 1.0 if duration <= 0 else min(1.0, (now - self.start_at) / duration)
        # 100 only once the effects are applied.
        return "processing", min(99, int(fraction * 100)), min(fraction, 0.99)

    def state(self, now: float) -> str:
        return self.progress(now)[0]

    def error(self, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(message)


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
    than the retention period (CC keeps them 10 days). Caller holds the lock."""
    now = sandbox.now()
    while account.pending and account.pending[0][0] <= now:
        _, _, activity_id = heapq.heappop(account.pending)
        activity = account.activities.get(activity_id)
        if activity is not None and not activity.completed:
            _apply(account, activity)
            activity.completed = True
    horizon = now - sandbox.options.activity_retention_days * 86_400
    while account.activities:
        oldest = next(iter(account.activities.values()))
        if oldest.created_at >= horizon or not oldest.completed:
            break
        del account.activities[oldest.activity_id]


def _apply(account: Account, activity: Activity) -> None:
    if activity.kind in IMPORTS:
        _apply_import(account, activity)
    elif activity.kind == EXPORT:
        _apply_export(account, activity)
    else:
        _apply_membership(account, activity)


# --- imports ---------------------------------------------------------------------------------
# Longest value CC accepts per column (JsonImportContact); anything else is capped at 255.
MAX_LENGTHS = {
    "email": 50,
    "first_name": 50,
    "last_name": 50,
    "job_title": 50,
    "company_name": 50,
    "sms_number": 16,
    "sms_consent_date": 16,
}


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
            limit = 12 if name == "birthday_month" else 31
            try:
                number = int(value)
            except (TypeError, ValueError):
                return f"{name} must be a whole number"
            if not 1 <= number <= limit:
                return f"{name} must be from 1 to {limit}"
        elif name != "email":
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                return f"{name} must be a string"
            if len(str(value)) > MAX_LENGTHS.get(name, 255):
                return f"{name} is longer than {MAX_LENGTHS.get(name, 255)} characters"
    if ("birthday_month" in row) != ("birthday_day" in row):
        return "birthday_month and birthday_day must be given together"
    return None


def _apply_import(account: Account, activity: Activity) -> None:
    now = activity.complete_at
    email_max = MAX_LENGTHS["email"] if activity.kind == JSON_IMPORT else 80
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
    if activity.completed:
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

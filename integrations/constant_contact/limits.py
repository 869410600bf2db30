"""Constant Contact's published limits: the one place the client, the bulk engine and the
sandbox read them from.

Reference: https://developer.constantcontact.com/api_guide/rate_limits.html
Reference: https://developer.constantcontact.com/api_guide/import_contacts.html
Reference: https://developer.constantcontact.com/api_guide/bulk_activities.html
Reference: https://developer.constantcontact.com/api_guide/activity_status.html
"""

from __future__ import annotations

import datetime as dt
from typing import Final

# --- per API key (client_id), shared by every account connected through it -------------------
#: Calls per second and per UTC day, by tier. Partner limits are granted by CC's API support.
TIER_LIMITS: Final[dict[str, tuple[int, int]]] = {
    "standard": (4, 10_000),
    "partner": (10, 250_000),
}
#: CC's token endpoint takes one request per second.
TOKEN_REQUESTS_PER_SECOND: Final = 1


def next_utc_midnight(now: dt.datetime | None = None) -> dt.datetime:
    """The next 00:00 UTC after ``now``: when CC resets every key's daily count."""
    today = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).date()
    return dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)


# --- tokens ---------------------------------------------------------------------------------
#: Access tokens live a static 24 hours.
ACCESS_TOKEN_LIFETIME_SECONDS: Final = 86_400
#: Refresh tokens (rotating or long-lived) die when unused for 180 days.
REFRESH_TOKEN_IDLE_DAYS: Final = 180
#: An authorization code is single use and lives 5 minutes.
AUTHORIZATION_CODE_LIFETIME_SECONDS: Final = 300

# --- bulk activities --------------------------------------------------------------------------
#: ``contacts_json_import``: at most 40,000 contacts per payload...
IMPORT_MAX_CONTACTS: Final = 40_000
#: ...and less than 4 MB (CC silently drops whatever lies past it, so stay under).
IMPORT_MAX_BYTES: Final = 4_000_000
#: ``contacts_file_import``: at most 40,000 lines, the header included.
IMPORT_FILE_MAX_LINES: Final = 40_000
#: Contact ids per membership add/remove or export activity.
ACTIVITY_CONTACT_IDS_MAX: Final = 500
#: Lists one activity may target.
ACTIVITY_LISTS_MAX: Final = 50
#: ``exclude.contact_ids`` of an export.
EXPORT_EXCLUDE_MAX: Final = 50
#: Non-terminal activities one account may have queued; past it CC answers 429.
QUEUED_ACTIVITIES_MAX: Final = 1_000
#: Activity status is kept this long.
ACTIVITY_RETENTION_DAYS: Final = 10
#: A contact belongs to at most this many lists.
LISTS_PER_CONTACT_MAX: Final = 50
#: Page sizes: ``GET /activities`` and ``GET /contacts`` take ``limit`` up to 500,
#: ``GET /contact_lists`` up to 1,000 (the schema's maximum; its description says 500).
ACTIVITIES_PAGE_MAX: Final = 500
CONTACTS_PAGE_MAX: Final = 500
CONTACT_LISTS_PAGE_MAX: Final = 1_000

#: Activity states after which nothing changes any more.
ACTIVITY_TERMINAL_STATES: Final = frozenset({"completed", "cancelled", "failed", "timed_out"})

# --- contact fields (JsonImportContact) -------------------------------------------------------
#: ``email`` of a JSON import row (``ContactPost`` allows 80; the bulk import is what we use).
IMPORT_EMAIL_MAX_LENGTH: Final = 50
#: ``email_address.address`` of a contact created one at a time.
CONTACT_EMAIL_MAX_LENGTH: Final = 80
#: ``cf:<name>`` custom fields per contact, and the length of each value.
CUSTOM_FIELDS_MAX: Final = 25
CUSTOM_FIELD_MAX_LENGTH: Final = 255

_SHORT, _LONG = 50, 255
_ADDRESS_PARTS: Final = ("street", "street2", "city", "state", "zip", "country")
#: Every string property of ``JsonImportContact`` and its maxLength. The spec spells one key
#: "home country" (with a space); the intended key is ``home_country``.
IMPORT_FIELD_MAX_LENGTHS: Final[dict[str, int]] = {
    "first_name": _SHORT,
    "last_name": _SHORT,
    "job_title": _SHORT,
    "company_name": _SHORT,
    "phone": _SHORT,
    "home_phone": _SHORT,
    "work_phone": _SHORT,
    "mobile_phone": _SHORT,
    "other_phone": _SHORT,
    **{part: _LONG if part.startswith("street") else _SHORT for part in _ADDRESS_PARTS},
    **{
        f"{kind}_{part}": _LONG if part.startswith("street") else _SHORT
        for kind in ("home", "work", "other")
        for part in _ADDRESS_PARTS
    },
    "sms_number": 16,
    "sms_consent_date": 16,
}
#: ``JsonImportContact`` properties typed as integers, with their largest value.
IMPORT_INTEGER_FIELDS: Final[dict[str, int]] = {"birthday_month": 12, "birthday_day": 31}
#: The date property, in the formats CC lists for it.
IMPORT_DATE_FIELD: Final = "anniversary"

"""Contact imports: ``POST /v3/activities/contacts_json_import`` and
``POST /v3/activities/contacts_file_import`` (CSV, multipart).

Both validate the request against CC's published limits and queue an activity
(``ActivityImport``); the rows are applied when it completes (``activities``).

Reference: https://developer.constantcontact.com/api_guide/import_contacts.html
Reference: https://developer.constantcontact.com/api_reference/index.html#!/Bulk_Activities/bulkImportContactsJSON
"""

from __future__ import annotations

import csv
import io
from http import HTTPStatus
from typing import Any

from integrations.constant_contact.limits import (
    ACTIVITY_LISTS_MAX,
    IMPORT_DATE_FIELD,
    IMPORT_FIELD_MAX_LENGTHS,
    IMPORT_FILE_MAX_LINES,
    IMPORT_INTEGER_FIELDS,
    IMPORT_MAX_BYTES,
    IMPORT_MAX_CONTACTS,
)
from integrations.sandbox import activities
from integrations.sandbox.api.common import (
    UNSUPPORTED_MEDIA_KEY,
    Ctx,
    Invalid,
    activity_reply,
    check_queue,
    id_list,
    invalid,
    json_body,
    json_object,
    known_lists,
)
from integrations.sandbox.responses import Reply, api_error

IMPORT_PERMISSIONS = ("explicit", "not_set")
# CC states the payload limit in MB: 4,000,000 bytes.
IMPORT_MAX_MB = IMPORT_MAX_BYTES // 1_000_000
# JsonImportContact keys; the spec spells one "home country" (sic), accepted as home_country.
IMPORT_COLUMNS = frozenset(
    {"email", IMPORT_DATE_FIELD, *IMPORT_INTEGER_FIELDS, *IMPORT_FIELD_MAX_LENGTHS}
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
    if len(raw) >= IMPORT_MAX_BYTES:
        # CC: the payload must be smaller than 4 MB; CC drops whatever lies past it.
        raise invalid(f"The request payload must be smaller than {IMPORT_MAX_MB} MB.")
    body = json_object(json_body(ctx.request))
    data = body.get("import_data")
    if not isinstance(data, list) or not data:
        raise invalid("import_data is required and must contain at least one contact.")
    if len(data) > IMPORT_MAX_CONTACTS:
        raise invalid(
            f"import_data may contain at most {IMPORT_MAX_CONTACTS:,} contacts; it has {len(data)}."
        )
    if not all(isinstance(item, dict) for item in data):
        raise invalid("Each import_data item must be an object.")
    list_ids = (
        id_list(body.get("list_ids"), "list_ids", maximum=ACTIVITY_LISTS_MAX, minimum=1)
        if "list_ids" in body
        else None
    )
    if list_ids is None:
        raise invalid("list_ids is required.")
    if body.get("sms_permission_to_send") not in (None, *IMPORT_PERMISSIONS):
        raise invalid("sms_permission_to_send does not have a valid value")
    rows = [(f"import_data[{i}]", _import_row(item)) for i, item in enumerate(data)]
    with ctx.data() as account:
        known_lists(account, list_ids, "list_ids", status=HTTPStatus.BAD_REQUEST)
        check_queue(ctx.sandbox, account)
        activity = activities.queue(
            ctx.sandbox,
            account,
            activities.JSON_IMPORT,
            items=len(rows),
            rows=rows,
            list_ids=list_ids,
            person_count=len(rows),
        )
        return activity_reply(ctx, activity)


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
        raise invalid("file is required.")
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
        raise invalid("list_ids is required.")
    # One form field, comma-separated (swagger: type string, format csv, maxItems 50).
    list_ids = id_list(
        [v.strip() for v in raw_ids.split(",") if v.strip()],
        "list_ids",
        maximum=ACTIVITY_LISTS_MAX,
        minimum=1,
    )
    if request.form.get("sms_permission_to_send") not in (None, *IMPORT_PERMISSIONS):
        raise invalid("sms_permission_to_send does not have a valid value")
    content = upload.stream.read(IMPORT_MAX_BYTES + 1)
    if len(content) > IMPORT_MAX_BYTES:
        raise invalid(f"The file must be at most {IMPORT_MAX_MB} MB.")
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = content.decode("latin-1")
    records = [record for record in csv.reader(io.StringIO(text)) if any(c.strip() for c in record)]
    if not records:
        raise invalid("The file is empty.")
    if len(records) > IMPORT_FILE_MAX_LINES:
        raise invalid(
            f"The file may contain at most {IMPORT_FILE_MAX_LINES:,} lines including the header; "
            f"it has {len(records)}."
        )
    header = [_import_header(name) for name in records[0]]
    if "email" not in header and "sms_number" not in header:
        raise invalid("The file must have an email column.")
    rows = [
        (f"line {number}", _import_row(dict(zip(header, record, strict=False))))
        for number, record in enumerate(records[1:], start=2)
    ]
    with ctx.data() as account:
        known_lists(account, list_ids, "list_ids", status=HTTPStatus.NOT_FOUND)
        check_queue(ctx.sandbox, account)
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
        return activity_reply(ctx, activity)


def _import_header(name: str) -> str:
    name = name.strip().lower().replace(" ", "_")
    return "email" if name == "email_address" else name

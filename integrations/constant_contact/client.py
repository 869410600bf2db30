"""Typed Constant Contact v3 endpoints over an injected sender.

``ConstantContact(send)`` takes any callable with the gateway's shape,
``send(method, path, *, params=None, json=None, files=None, accept=...)``, returning the parsed
JSON (or text for CSV). ccportal passes ``functools.partial(cc_call, account=..., lane=...)``,
so every call below is rate-limited, authorised, retried and recorded by the gateway.
Paths are relative to the API base (``https://api.cc.email/v3``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Protocol
from urllib.parse import urlsplit


class Sender(Protocol):
    def __call__(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        files: dict[str, Any] | None = None,
        data: bytes | None = None,
        accept: str = "application/json",
    ) -> Any: ...


def next_page_path(page: dict[str, Any]) -> str | None:
    """CC's cursor link (``_links.next.href``, e.g. ``/v3/contacts?cursor=...``) as a path
    relative to the API base, or None on the last page."""
    href = ((page.get("_links") or {}).get("next") or {}).get("href")
    if not href:
        return None
    parts = urlsplit(href)
    path = parts.path
    if path.startswith("/v3/"):
        path = path[len("/v3") :]
    return f"{path}?{parts.query}" if parts.query else path


class ConstantContact:
    """One method per CC endpoint ccportal uses."""

    def __init__(self, send: Sender) -> None:
        self._send = send

    def pages(self, path: str, *, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Every page of a paginated collection, following ``_links.next.href``."""
        page = self._send("GET", path, params=params)
        yield page
        while (following := next_page_path(page)) is not None:
            page = self._send("GET", following)
            yield page

    # --- contact lists ----------------------------------------------------------------------
    def contact_lists(
        self, *, include_membership_count: bool = True, limit: int = 500
    ) -> list[dict[str, Any]]:
        """All contact lists, with membership counts."""
        # Reference: https://developer.constantcontact.com/api_reference/index.html#!/Contact_Lists/getLists
        params: dict[str, Any] = {"limit": limit, "include_count": "true"}
        if include_membership_count:
            params["include_membership_count"] = "all"
        return [
            item
            for page in self.pages("/contact_lists", params=params)
            for item in page.get("lists", [])
        ]

    def contact_list_create(
        self, *, name: str, description: str = "", favorite: bool = False
    ) -> dict[str, Any]:
        """Create a list (409 when the name is taken)."""
        # Reference: https://developer.constantcontact.com/api_reference/index.html#!/Contact_Lists/createList
        body = {"name": name, "favorite": favorite, "description": description}
        return self._send("POST", "/contact_lists", json=body)

    def contact_list(self, list_id: str) -> dict[str, Any]:
        """One list with its membership count."""
        # Reference: https://developer.constantcontact.com/api_reference/index.html#!/Contact_Lists/getList
        return self._send(
            "GET", f"/contact_lists/{list_id}", params={"include_membership_count": "all"}
        )

    # --- contacts ---------------------------------------------------------------------------
    def contacts(
        self, *, list_id: str | None = None, limit: int = 500, include_lists: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Contacts, optionally only members of one list, page by page."""
        # Reference: https://developer.constantcontact.com/api_reference/index.html#!/Contacts/getContacts
        params: dict[str, Any] = {"limit": limit}
        if list_id:
            params["lists"] = list_id
        if include_lists:
            params["include"] = "list_memberships"
        for page in self.pages("/contacts", params=params):
            yield from page.get("contacts", [])

    def contact_create(
        self,
        *,
        email: str,
        first_name: str = "",
        last_name: str = "",
        list_ids: list[str] | None = None,
    ) -> dict[str, Any]:
        """Create one contact (409 when the email exists)."""
        # Reference: https://developer.constantcontact.com/api_reference/index.html#!/Contacts/createContact
        body: dict[str, Any] = {"email_address": {"address": email}, "create_source": "Account"}
        if first_name:
            body["first_name"] = first_name
        if last_name:
            body["last_name"] = last_name
        if list_ids:
            body["list_memberships"] = list_ids
        return self._send("POST", "/contacts", json=body)

    def contact(self, contact_id: str) -> dict[str, Any]:
        """One contact with its list memberships."""
        # Reference: https://developer.constantcontact.com/api_reference/index.html#!/Contacts/getContact
        return self._send("GET", f"/contacts/{contact_id}", params={"include": "list_memberships"})

    # --- bulk activities --------------------------------------------------------------------
    def contact_export_create(
        self, *, list_ids: list[str], fields: list[str] | None = None
    ) -> dict[str, Any]:
        """Start a CSV export of the members of up to 50 lists."""
        # Reference: https://developer.constantcontact.com/api_reference/index.html#!/Bulk_Activities/postContactsExport
        body: dict[str, Any] = {"list_ids": list_ids}
        if fields:
            body["fields"] = fields
        return self._send("POST", "/activities/contact_exports", json=body)

    def contact_export_download(self, file_export_id: str) -> str:
        """The CSV of a completed export."""
        # Reference: https://developer.constantcontact.com/api_reference/index.html#!/Bulk_Activities/getContactsExport
        return self._send("GET", f"/contact_exports/{file_export_id}", accept="text/csv")

    def contacts_json_import(
        self, *, contacts: list[dict[str, Any]], list_ids: list[str]
    ) -> dict[str, Any]:
        """Import up to 40,000 contacts (< 4 MB) into lists; matched by email, supplied fields only."""
        # Reference: https://developer.constantcontact.com/api_reference/index.html#!/Bulk_Activities/bulkImportContactsJSON
        # Compact JSON: CC drops whatever lies past 4 MB, so the body sent must be the body
        # that was measured when the contacts were chunked.
        body = json.dumps({"import_data": contacts, "list_ids": list_ids}, separators=(",", ":"))
        return self._send("POST", "/activities/contacts_json_import", data=body.encode("ascii"))

    def contacts_file_import(
        self, *, csv_bytes: bytes, list_ids: list[str], filename: str = "contacts.csv"
    ) -> dict[str, Any]:
        """Import a CSV file (≤ 40,000 lines incl. header, ≤ 4 MB) into lists."""
        # Reference: https://developer.constantcontact.com/api_reference/index.html#!/Bulk_Activities/contactsCSVImport
        files = {"file": (filename, csv_bytes, "text/csv"), "list_ids": (None, ",".join(list_ids))}
        return self._send("POST", "/activities/contacts_file_import", files=files)

    def list_memberships_add(
        self, *, contact_ids: list[str], list_ids: list[str]
    ) -> dict[str, Any]:
        """Add up to 500 contacts to up to 50 lists."""
        # Reference: https://developer.constantcontact.com/api_reference/index.html#!/Bulk_Activities/postListAddContact
        body = {"source": {"contact_ids": contact_ids}, "list_ids": list_ids}
        return self._send("POST", "/activities/add_list_memberships", json=body)

    def list_memberships_remove(
        self,
        *,
        contact_ids: list[str] | None = None,
        source_list_ids: list[str] | None = None,
        list_ids: list[str],
    ) -> dict[str, Any]:
        """Remove up to 500 contacts (or every member of source lists) from up to 50 lists."""
        # Reference: https://developer.constantcontact.com/api_reference/index.html#!/Bulk_Activities/postListRemoveContact
        source: dict[str, Any] = (
            {"contact_ids": contact_ids}
            if contact_ids is not None
            else {"list_ids": source_list_ids}
        )
        return self._send(
            "POST",
            "/activities/remove_list_memberships",
            json={"source": source, "list_ids": list_ids},
        )

    def activities(self, *, state: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Recent activities of the account (one page, newest first)."""
        # Reference: https://developer.constantcontact.com/api_reference/index.html#!/Bulk_Activities/getActivityStatusCollection
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state
        return self._send("GET", "/activities", params=params).get("activities", [])

    def activity(self, activity_id: str) -> dict[str, Any]:
        """One activity's state, percent_done, status counts and errors."""
        # Reference: https://developer.constantcontact.com/api_reference/index.html#!/Bulk_Activities/getActivityById
        return self._send("GET", f"/activities/{activity_id}")

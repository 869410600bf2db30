"""Typed Constant Contact v3 endpoints over an injected sender.

``ConstantContact(send)`` takes any callable with the gateway's shape,
``send(method, path, *, params=None, json=None, files=None, data=None, accept=...)``, returning
the parsed JSON (or text for CSV). ccportal passes one that goes through ``cc_call``, so every
call below is rate-limited, authorised, retried and recorded by the gateway; tests pass a
:class:`~integrations.constant_contact.testing.FakeSender`. Paths are relative to the API base
(``https://api.cc.email/v3``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol
from urllib.parse import urlsplit

from integrations.constant_contact.errors import CCUnexpectedAnswer
from integrations.constant_contact.limits import (
    ACTIVITIES_PAGE_MAX,
    ACTIVITY_TERMINAL_STATES,
    CONTACT_LISTS_PAGE_MAX,
    CONTACTS_PAGE_MAX,
)


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


def compact_json(value: object) -> str:
    """JSON without spaces, ASCII only: its length in characters is its length in bytes, and
    it is the larger of the two encodings, so a body measured with it fits however it is sent."""
    return json.dumps(value, separators=(",", ":"))


def json_import_body(import_data: Sequence[Mapping[str, object]], list_ids: Sequence[str]) -> bytes:
    """The exact body ``contacts_json_import`` sends. CC drops whatever lies past 4 MB, so the
    bulk engine measures its chunks with :func:`compact_json` and this is what goes out."""
    return compact_json({"import_data": list(import_data), "list_ids": list(list_ids)}).encode(
        "ascii"
    )


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


@dataclass(frozen=True)
class Activity:
    """What CC says of a bulk activity (``ActivityImport``, ``ActivityExportStatus``,
    ``ActivityListsMembership``, ``Activity``): the shape the bulk engine relies on."""

    activity_id: str
    state: str
    percent_done: int = 0
    status: dict[str, int] = field(default_factory=dict)
    errors: tuple[str, ...] = ()
    results_href: str = ""
    #: When CC created it, epoch seconds (0 when CC did not say).
    created_at: float = 0.0

    @property
    def is_finished(self) -> bool:
        return self.state in ACTIVITY_TERMINAL_STATES

    @property
    def file_export_id(self) -> str:
        """The id of an export's CSV (the last segment of ``_links.results.href``); CC uses
        the activity id, which is the answer when the link is missing."""
        return self.results_href.rstrip("/").rsplit("/", 1)[-1] or self.activity_id

    @classmethod
    def from_json(cls, data: Any) -> Activity:
        if not isinstance(data, dict) or not isinstance(data.get("activity_id"), str):
            raise CCUnexpectedAnswer("Constant Contact's activity answer has no activity_id.")
        status = data.get("status") if isinstance(data.get("status"), dict) else {}
        links = data.get("_links") if isinstance(data.get("_links"), dict) else {}
        results = links.get("results") if isinstance(links.get("results"), dict) else {}
        return cls(
            activity_id=data["activity_id"],
            state=str(data.get("state") or "initialized"),
            percent_done=_whole(data.get("percent_done")),
            status={str(k): _whole(v) for k, v in status.items()},
            errors=tuple(_error_text(e) for e in (data.get("activity_errors") or [])),
            results_href=str(results.get("href") or ""),
            created_at=_epoch(data.get("created_at")),
        )


@dataclass(frozen=True)
class AccountSummary:
    """Who a connection belongs to, from CC's ``Customer`` (``GET /account/summary``).

    CC's API names no login: ``Customer`` has no login field, and the access token carries
    only ids (``sub``, ``platform_user_id``; an ``email`` claim only if ``openid email`` were
    asked for). ``contact_email``, the address CC keeps for the account owner, is the closest
    the reference offers, and ccportal shows it as the account's login email.
    """

    organization_name: str = ""
    contact_email: str = ""
    encoded_account_id: str = ""
    first_name: str = ""
    last_name: str = ""

    @classmethod
    def from_json(cls, data: Any) -> AccountSummary:
        if not isinstance(data, dict):
            raise CCUnexpectedAnswer("Constant Contact's account summary is not an object.")
        values = {f.name: data.get(f.name) for f in fields(cls)}
        wrong = [name for name, value in values.items() if not isinstance(value, str | None)]
        if wrong:
            raise CCUnexpectedAnswer(
                f"Constant Contact's account summary has a {wrong[0]} that is not a string."
            )
        return cls(**{name: (value or "").strip() for name, value in values.items()})


def _epoch(value: Any) -> float:
    try:
        return dt.datetime.fromisoformat(str(value)).timestamp() if value else 0.0
    except ValueError:
        return 0.0


def _whole(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _error_text(error: Any) -> str:
    # The spec types activity_errors as strings; objects with a message have been seen too.
    if isinstance(error, dict):
        return str(error.get("message") or error.get("error_message") or error)
    return str(error)


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

    # --- account ----------------------------------------------------------------------------
    def account_summary(self) -> AccountSummary:
        """The account's organisation name and owner email (needs the ``account_read`` scope)."""
        # Reference: https://developer.constantcontact.com/api_reference/index.html#!/Account_Services/getAccountById
        # No extra_fields: physical_address and company_logo are not needed to name the account.
        return AccountSummary.from_json(self._send("GET", "/account/summary"))

    # --- contact lists ----------------------------------------------------------------------
    def contact_lists(self) -> list[dict[str, Any]]:
        """Every contact list of the account with its membership count."""
        # Reference: https://developer.constantcontact.com/api_reference/index.html#!/Contact_Lists/getLists
        params = {
            "limit": CONTACT_LISTS_PAGE_MAX,
            "include_count": "true",
            "include_membership_count": "all",
        }
        return [
            item
            for page in self.pages("/contact_lists", params=params)
            for item in page.get("lists", [])
        ]

    # --- contacts ---------------------------------------------------------------------------
    def contacts(
        self, *, list_id: str | None = None, limit: int = CONTACTS_PAGE_MAX
    ) -> Iterator[dict[str, Any]]:
        """Contacts, optionally only the members of one list, ``limit`` to a page."""
        # Reference: https://developer.constantcontact.com/api_reference/index.html#!/Contacts/getContacts
        params: dict[str, Any] = {"limit": limit}
        if list_id:
            params["lists"] = list_id
        for page in self.pages("/contacts", params=params):
            yield from page.get("contacts", [])

    # --- bulk activities --------------------------------------------------------------------
    def contact_export_create(self, *, list_ids: list[str], fields: list[str]) -> Activity:
        """Start a CSV export of the members of up to 50 lists."""
        # Reference: https://developer.constantcontact.com/api_reference/index.html#!/Bulk_Activities/postContactsExport
        body = {"list_ids": list_ids, "fields": fields}
        return Activity.from_json(self._send("POST", "/activities/contact_exports", json=body))

    def contact_export_download(self, file_export_id: str) -> str:
        """The CSV of a completed export."""
        # Reference: https://developer.constantcontact.com/api_reference/index.html#!/Bulk_Activities/getContactsExport
        answer = self._send("GET", f"/contact_exports/{file_export_id}", accept="text/csv")
        return answer if isinstance(answer, str) else ""

    def contacts_json_import(
        self, *, contacts: Sequence[Mapping[str, object]], list_ids: list[str]
    ) -> Activity:
        """Import up to 40,000 contacts (< 4 MB) into lists; matched by email, supplied fields only."""
        # Reference: https://developer.constantcontact.com/api_reference/index.html#!/Bulk_Activities/bulkImportContactsJSON
        body = json_import_body(contacts, list_ids)
        return Activity.from_json(self._send("POST", "/activities/contacts_json_import", data=body))

    def list_memberships_remove(
        self,
        *,
        list_ids: list[str],
        contact_ids: list[str] | None = None,
        source_list_ids: list[str] | None = None,
    ) -> Activity:
        """Remove up to 500 contacts (or every member of source lists) from up to 50 lists."""
        # Reference: https://developer.constantcontact.com/api_reference/index.html#!/Bulk_Activities/postListRemoveContact
        source: dict[str, Any] = (
            {"contact_ids": contact_ids}
            if contact_ids is not None
            else {"list_ids": source_list_ids}
        )
        return Activity.from_json(
            self._send(
                "POST",
                "/activities/remove_list_memberships",
                json={"source": source, "list_ids": list_ids},
            )
        )

    def activities(self, *, limit: int = ACTIVITIES_PAGE_MAX) -> list[Activity]:
        """The account's recent activities, newest first (one page)."""
        # Reference: https://developer.constantcontact.com/api_reference/index.html#!/Bulk_Activities/getActivityStatusCollection
        page = self._send("GET", "/activities", params={"limit": limit})
        return [Activity.from_json(item) for item in (page or {}).get("activities", [])]

    def activity(self, activity_id: str) -> Activity:
        """One activity's state, percent_done, status counts and errors."""
        # Reference: https://developer.constantcontact.com/api_reference/index.html#!/Bulk_Activities/getActivityById
        return Activity.from_json(self._send("GET", f"/activities/{activity_id}"))

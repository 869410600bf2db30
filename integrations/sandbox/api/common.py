"""What every ``/v3`` handler shares: the request context, the refusal it raises, and the
helpers that read CC's query parameters, cursors and JSON bodies.

Helpers raise :class:`Invalid` carrying CC's error reply (mostly a 400
``contacts.api.validation.error``); :func:`integrations.sandbox.api.dispatch` sends it.

Reference: https://developer.constantcontact.com/api_guide/glossary_responses.html
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlencode

from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Request

from integrations.sandbox import activities
from integrations.sandbox.activity_record import Activity
from integrations.sandbox.clock import parse_iso
from integrations.sandbox.oauth import Caller
from integrations.sandbox.responses import (
    Reply,
    api_error,
    json_reply,
    not_found,
    too_many_queued_activities,
    validation_error,
)
from integrations.sandbox.state import UUID_RE, Account, Sandbox

CONFLICT_KEY = "contacts.api.conflict"
UNSUPPORTED_MEDIA_KEY = "contacts.api.unsupported_media_type"
CURSOR_RE = re.compile(r"^[A-Za-z0-9_-]+$")


class Invalid(Exception):
    """A request the spec calls invalid; carries the reply to send."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


def invalid(message: str) -> Invalid:
    """CC's 400 validation error with ``message``, ready to raise."""
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


# --- query parameters and cursors ------------------------------------------------------------
def encode_cursor(query: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(urlencode(query).encode()).decode().rstrip("=")


def query_args(request: Request) -> MultiDict:
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
        raise invalid("cursor is not valid.") from None


def limit_param(args: MultiDict, maximum: int, default: int = 50) -> int:
    raw = args.get("limit")
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid("limit must be a whole number.") from None
    if not 1 <= value <= maximum:
        raise invalid(f"limit must be from 1 to {maximum}.")
    return value


def offset_param(args: MultiDict, name: str = "offset") -> int:
    try:
        return max(0, int(args.get(name, 0)))
    except ValueError:
        raise invalid("cursor is not valid.") from None


def after_param(args: MultiDict) -> int:
    """The ``seq`` of the last contact already returned (cursor), or -1."""
    try:
        return int(args.get("after", -1))
    except ValueError:
        raise invalid("cursor is not valid.") from None


def bool_param(args: MultiDict, name: str) -> bool:
    raw = args.get(name)
    if raw is None:
        return False
    if raw.lower() not in ("true", "false"):
        raise invalid(f"{name} does not have a valid value")
    return raw.lower() == "true"


def choice_param(args: MultiDict, name: str, allowed: tuple[str, ...]) -> str | None:
    raw = args.get(name)
    if raw is not None and raw not in allowed:
        raise invalid(f"{name} does not have a valid value")
    return raw


def csv_param(args: MultiDict, name: str, allowed: tuple[str, ...]) -> list[str]:
    """A comma-separated parameter whose every value is one of ``allowed``."""
    raw = args.get(name)
    if raw is None:
        return []
    values = [value.strip() for value in raw.split(",") if value.strip()]
    if not values or any(value not in allowed for value in values):
        raise invalid(f"{name} does not have a valid value")
    return values


def date_param(args: MultiDict, name: str) -> float | None:
    raw = args.get(name)
    if raw is None:
        return None
    try:
        return parse_iso(raw)
    except ValueError:
        raise invalid(f"{name} must be an ISO-8601 date-time.") from None


def next_link(path: str, args: MultiDict, **position: int) -> dict[str, Any]:
    """``_links.next`` for the page after ``position``; the cursor carries every parameter."""
    query = {k: v for k, v in args.items() if k not in ("cursor", *position)}
    query.update({k: str(v) for k, v in position.items()})
    return {"next": {"href": f"{path}?cursor={encode_cursor(query)}"}}


# --- bodies ----------------------------------------------------------------------------------
def json_body(request: Request, *, allow_empty: bool = False) -> Any:
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
        raise invalid("The request body is not valid JSON.") from None


def json_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    return body


def id_list(
    value: Any, name: str, *, maximum: int, minimum: int = 0, uuids: bool = True
) -> list[str]:
    """A JSON array of (by default UUID) strings, within its size limits, deduplicated."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise invalid(f"{name} must be an array of strings.")
    if len(value) > maximum:
        raise invalid(f"{name} may contain at most {maximum} items; it has {len(value)}.")
    if len(value) < minimum:
        raise invalid(f"{name} must contain at least {minimum} item(s).")
    if uuids:
        bad = [item for item in value if not UUID_RE.match(item)]
        if bad:
            raise invalid(f"{name} contains an invalid id: {bad[0]!r}.")
    return list(dict.fromkeys(value))


# --- account checks (caller holds the lock) --------------------------------------------------
def known_lists(account: Account, list_ids: list[str], name: str, *, status: int) -> None:
    """Refuse with ``status`` (404 or 400) when a list id is not one of the account's."""
    missing = [list_id for list_id in list_ids if list_id not in account.lists]
    if missing:
        message = f"{name} contains a list_id that does not exist: {missing[0]}."
        if status == HTTPStatus.NOT_FOUND:
            raise Invalid(not_found(message))
        raise invalid(message)


def check_queue(sandbox: Sandbox, account: Account) -> None:
    """CC's 429 when the account already has ``max_queued_activities`` activities queued."""
    if activities.queued_count(account) >= sandbox.options.max_queued_activities:
        raise Invalid(too_many_queued_activities())


def activity_reply(ctx: Ctx, activity: Activity, status: int = HTTPStatus.CREATED) -> Reply:
    """The activity as CC shows it; a new one (201) is "initialized", 0 % done."""
    at = activity.created_at if status == HTTPStatus.CREATED else ctx.sandbox.now()
    return json_reply(activities.activity_json(activity, at), status)

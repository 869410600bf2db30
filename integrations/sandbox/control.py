"""``SandboxControl``: a typed client for the sandbox's control API (``/__sandbox/``).

Tests and benchmarks across ccportal use it to set up and observe a running sandbox::

    control = SandboxControl("http://127.0.0.1:8765")
    control.register_client("my-app", client_secret="s3cret",
                            redirect_uris=["http://127.0.0.1:8000/accounts/callback/"])
    account = control.create_account("owner@example.com")
    newsletter = control.seed_list(account, "Newsletter")
    control.seed_contacts(account, count=1_000, list_ids=[newsletter.list_id])
    code = control.authorize("my-app", "http://127.0.0.1:8000/accounts/callback/",
                             "contact_data offline_access", state="xyz", account=account.email)
    ...
    assert control.stats("my-app").throttled == 0

Every method raises :class:`SandboxControlError` when the sandbox refuses. The interface is
stable: new parameters are added as keyword arguments with defaults. The method names match the
endpoints documented in ``integrations/sandbox/README.md``.
"""

from __future__ import annotations

import datetime as dt
import html
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import requests

# The sandbox serves CC's paths on its own host.
from integrations.constant_contact.endpoints import API_PATH, AUTHORIZE_PATH, JWKS_PATH, TOKEN_PATH


class SandboxControlError(Exception):
    """The sandbox answered a control (or consent) request with an error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"sandbox answered {status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class SandboxAccount:
    """A CC account/user in the sandbox; ``sub`` is the access token's ``sub`` claim."""

    sub: str
    platform_user_id: str
    email: str
    name: str


@dataclass(frozen=True)
class SandboxList:
    list_id: str
    name: str
    membership_count: int = 0


@dataclass(frozen=True)
class SeededContacts:
    created: int
    updated: int
    contact_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ListMember:
    contact_id: str
    email: str
    permission_to_send: str


@dataclass(frozen=True)
class ClientStats:
    """Exact figures for one client_id (see README.md, "Stats", for each field's meaning)."""

    client_id: str
    requests: int = 0
    accepted: int = 0
    status_2xx: int = 0
    status_4xx: int = 0
    status_5xx: int = 0
    unauthorized: int = 0
    forbidden: int = 0
    throttled: int = 0
    quota_exceeded: int = 0
    timeouts: int = 0
    resets: int = 0
    token_requests: int = 0
    token_2xx: int = 0
    token_429: int = 0
    token_throttled: int = 0
    invalid_grant: int = 0
    token_errors: dict[str, int] = field(default_factory=dict)
    by_status: dict[str, int] = field(default_factory=dict)
    by_path: dict[str, dict[str, int]] = field(default_factory=dict)
    max_accepted_per_second: int = 0
    max_arrivals_per_second: int = 0
    max_token_requests_per_second: int = 0
    today: dict[str, Any] = field(default_factory=dict)

    @property
    def today_count(self) -> int:
        """Units of today's (sandbox-clock UTC day) budget consumed."""
        return int(self.today.get("count", 0))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClientStats:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def _account_key(account: SandboxAccount | str) -> str:
    return account.sub if isinstance(account, SandboxAccount) else account


def _segment(value: str) -> str:
    return quote(value, safe="@")


def _parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


class SandboxControl:
    """Client for one running sandbox; safe to share between threads."""

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        self.url = base_url.rstrip("/")
        self.timeout = timeout
        self._local = threading.local()

    # --- endpoint URLs, as ccportal's settings name them --------------------------------------
    @property
    def authorize_url(self) -> str:
        return self.url + AUTHORIZE_PATH

    @property
    def token_url(self) -> str:
        return self.url + TOKEN_PATH

    @property
    def api_base_url(self) -> str:
        return self.url + API_PATH

    @property
    def jwks_url(self) -> str:
        return self.url + JWKS_PATH

    # --- plumbing ----------------------------------------------------------------------------
    @property
    def session(self) -> requests.Session:
        """This thread's keep-alive session (requests sessions are not shared across threads)."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.session.request(
            method, f"{self.url}/__sandbox{path}", json=body, timeout=self.timeout
        )
        if not response.ok:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise SandboxControlError(response.status_code, message)
        return response.json()

    # --- lifecycle ---------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """``{"status": "ok", "now": ..., "offset_seconds": ...}``."""
        return self._call("GET", "/health")

    def reset(self) -> None:
        """Forget every client, account, token, fault, stat, option and clock move (the
        ``--config`` preload is applied again); signing keys are kept."""
        self._call("POST", "/reset")

    def options(self) -> dict[str, Any]:
        return self._call("GET", "/options")

    def set_options(self, **options: Any) -> dict[str, Any]:
        """Change sandbox-wide options, e.g. ``activity_items_per_second=50``; returns all."""
        return self._call("PATCH", "/options", options)

    # --- clients and accounts ----------------------------------------------------------------
    def register_client(
        self,
        client_id: str,
        *,
        redirect_uris: Sequence[str],
        client_secret: str = "",
        name: str | None = None,
        tier: str = "standard",
        per_second: int | None = None,
        per_day: int | None = None,
        refresh_mode: str = "rotating",
        auto_approve: bool = False,
        access_token_lifetime: int | None = None,
    ) -> dict[str, Any]:
        """Register (or update, keeping its tokens) a CC application.

        An empty ``client_secret`` makes a public client that must use PKCE. ``tier`` sets the
        limits (standard 4/s + 10,000/day, partner 10/s + 250,000/day); ``per_second`` and
        ``per_day`` override them (required for ``tier="custom"``).
        """
        body: dict[str, Any] = {
            "client_id": client_id,
            "client_secret": client_secret,
            "redirect_uris": list(redirect_uris),
            "tier": tier,
            "refresh_mode": refresh_mode,
            "auto_approve": auto_approve,
        }
        for key, value in (
            ("name", name),
            ("per_second", per_second),
            ("per_day", per_day),
            ("access_token_lifetime", access_token_lifetime),
        ):
            if value is not None:
                body[key] = value
        return self._call("POST", "/clients", body)

    def create_account(
        self,
        email: str,
        *,
        name: str | None = None,
        sub: str | None = None,
        platform_user_id: str | None = None,
        organization_name: str | None = None,
    ) -> SandboxAccount:
        """Create a CC account/user, or return the existing one with that email.
        ``organization_name`` defaults to "<name>'s organization"."""
        body = {
            "email": email,
            "name": name,
            "sub": sub,
            "platform_user_id": platform_user_id,
            "organization_name": organization_name,
        }
        data = self._call("POST", "/accounts", {k: v for k, v in body.items() if v})
        return SandboxAccount(data["sub"], data["platform_user_id"], data["email"], data["name"])

    def seed_list(
        self,
        account: SandboxAccount | str,
        name: str,
        *,
        description: str | None = None,
        favorite: bool = False,
    ) -> SandboxList:
        """Create a contact list in ``account`` (by object, sub or email), or return the
        existing list with that name."""
        body: dict[str, Any] = {"name": name, "favorite": favorite}
        if description is not None:
            body["description"] = description
        data = self._call("POST", f"/accounts/{_segment(_account_key(account))}/lists", body)
        return SandboxList(data["list_id"], data["name"], data["membership_count"])

    def seed_contacts(
        self,
        account: SandboxAccount | str,
        *,
        count: int = 0,
        list_ids: Iterable[str] = (),
        email_template: str = "contact{n}@example.com",
        start: int = 1,
        unsubscribed_every: int = 0,
        contacts: Iterable[dict[str, Any]] = (),
        return_ids: bool = False,
    ) -> SeededContacts:
        """Bulk-create contacts in one request (100,000 take a few seconds).

        ``count`` contacts are generated from ``email_template`` (``{n}`` runs from
        ``start``); ``contacts`` adds explicit ones (``email``, ``first_name``,
        ``permission_to_send``, ``list_ids``...). Existing emails are reused. All join
        ``list_ids``. ``unsubscribed_every=k`` makes every k-th generated contact
        unsubscribed. ``return_ids`` returns the ids in creation order.
        """
        body = {
            "count": count,
            "list_ids": list(list_ids),
            "email_template": email_template,
            "start": start,
            "unsubscribed_every": unsubscribed_every,
            "contacts": list(contacts),
            "return_ids": return_ids,
        }
        data = self._call("POST", f"/accounts/{_segment(_account_key(account))}/contacts", body)
        return SeededContacts(data["created"], data["updated"], data.get("contact_ids", []))

    def account(self, account: SandboxAccount | str) -> dict[str, Any]:
        """The account's summary: lists with member counts, queued activities."""
        return self._call("GET", f"/accounts/{_segment(_account_key(account))}")

    def list_members(self, account: SandboxAccount | str, list_id: str) -> list[ListMember]:
        """Members of a list, in the order they joined (due activities applied first)."""
        path = f"/accounts/{_segment(_account_key(account))}/lists/{_segment(list_id)}/members"
        data = self._call("GET", path)
        return [
            ListMember(m["contact_id"], m["email"], m["permission_to_send"])
            for m in data["members"]
        ]

    def mint_tokens(
        self,
        client_id: str,
        *,
        account: SandboxAccount | str | None = None,
        scope: str = "contact_data offline_access",
    ) -> dict[str, Any]:
        """A token response for ``client_id`` and ``account`` without the OAuth dance. It
        bypasses the token endpoint, so it is neither rate limited nor counted in the stats."""
        body: dict[str, Any] = {"client_id": client_id, "scope": scope}
        if account is not None:
            body["account"] = _account_key(account)
        return self._call("POST", "/tokens", body)

    # --- faults ------------------------------------------------------------------------------
    def inject_api_fault(
        self,
        kind: str | int,
        *,
        count: int = 1,
        client_id: str | None = None,
        path: str | None = None,
        method: str | None = None,
        hold_seconds: float | None = None,
        then: str = "504",
        applied_first: bool = False,
    ) -> None:
        """Make the next ``count`` API requests (that pass the rate limiter; optionally only
        for ``client_id``, paths starting with ``path`` and one HTTP ``method``) fail.

        ``kind``: ``500``, ``503``, ``"timeout"`` (hold ``hold_seconds`` — default 30 — then
        answer 504, or drop with ``then="reset"``; with ``applied_first`` the request is
        carried out before the hold) or ``"reset"`` (TCP reset, no response).
        """
        body: dict[str, Any] = {"kind": str(kind), "count": count, "then": then}
        if applied_first:
            body["applied_first"] = True
        for key, value in (
            ("client_id", client_id),
            ("path", path),
            ("method", method),
            ("hold_seconds", hold_seconds),
        ):
            if value is not None:
                body[key] = value
        self._call("POST", "/faults/api", body)

    def inject_token_fault(
        self,
        kind: str | int,
        *,
        count: int = 1,
        client_id: str | None = None,
        hold_seconds: float | None = None,
        then: str = "503",
        applied_first: bool = False,
    ) -> None:
        """Make the next ``count`` token requests answer ``429``, ``503``,
        ``"invalid_grant"`` or ``"timeout"`` (held ``hold_seconds``, then 503 or, with
        ``then="reset"``, dropped; ``applied_first`` issues the tokens before the hold, so a
        rotating refresh token is spent) — after the 1/s limiter."""
        body: dict[str, Any] = {"kind": str(kind), "count": count, "then": then}
        if client_id is not None:
            body["client_id"] = client_id
        if hold_seconds is not None:
            body["hold_seconds"] = hold_seconds
        if applied_first:
            body["applied_first"] = True
        self._call("POST", "/faults/token", body)

    def inject_activity_fault(self, state: str, *, count: int = 1, kind: str | None = None) -> None:
        """Make the next ``count`` bulk activities (of ``kind``, e.g.
        ``"contacts_json_import"``, or any) end ``state`` — ``failed``, ``timed_out`` or
        ``cancelled`` — having applied nothing."""
        body: dict[str, Any] = {"state": state, "count": count}
        if kind is not None:
            body["kind"] = kind
        self._call("POST", "/faults/activity", body)

    def start_outage(self, seconds: float) -> None:
        """Make the sandbox unreachable for ``seconds``: connecting is refused, open
        connections are shut; then it listens on the same port again, its state intact."""
        self._call("POST", "/faults/outage", {"seconds": seconds})

    def injected(self) -> dict[str, int]:
        """How many faults fired, by kind (``"api:500"``, ``"token:timeout"``,
        ``"activity:failed"``, ``"outage"``…), since the last stats reset."""
        return self._call("GET", "/stats").get("injected", {})

    def activities(self, account: SandboxAccount | str) -> dict[str, Any]:
        """The account's activities, oldest first, each with ``kind``, ``state``,
        ``fingerprint`` and ``applied``; ``duplicates`` counts applied imports and membership
        changes that repeat one applied before them."""
        return self._call("GET", f"/accounts/{_segment(_account_key(account))}/activities")

    def set_jitter(self, min_ms: float, max_ms: float) -> None:
        """Delay every API and token request by ``min_ms``-``max_ms`` before it is counted."""
        self._call("PUT", "/faults/jitter", {"min_ms": min_ms, "max_ms": max_ms})

    def faults(self) -> dict[str, Any]:
        """Pending faults and the jitter range."""
        return self._call("GET", "/faults")

    def clear_faults(self) -> None:
        """Drop pending faults and jitter; releases connections held by timeout faults."""
        self._call("DELETE", "/faults")

    # --- clock and keys ----------------------------------------------------------------------
    def now(self) -> dt.datetime:
        """The sandbox clock (UTC)."""
        return _parse_time(self._call("GET", "/clock")["now"])

    def advance_clock(self, seconds: float) -> dt.datetime:
        """Move the sandbox clock forward; returns the new time. Token expiry, the UTC day of
        the daily quota and activity progress follow it; the per-second window does not."""
        return _parse_time(self._call("POST", "/clock", {"advance_seconds": seconds})["now"])

    def set_clock(self, when: dt.datetime | str) -> dt.datetime:
        """Make the sandbox clock read ``when`` (it keeps ticking from there)."""
        value = when.isoformat() if isinstance(when, dt.datetime) else when
        return _parse_time(self._call("POST", "/clock", {"now": value})["now"])

    def rotate_keys(self, *, retain_seconds: float | None = None) -> str:
        """Sign with a new key; the old one stays in the JWKS ``retain_seconds`` (sandbox
        clock; default the ``key_retention_seconds`` option). Returns the new ``kid``."""
        body = {} if retain_seconds is None else {"retain_seconds": retain_seconds}
        return self._call("POST", "/keys/rotate", body)["signing_kid"]

    def keys(self) -> dict[str, Any]:
        return self._call("GET", "/keys")

    # --- stats -------------------------------------------------------------------------------
    def stats(self, client_id: str) -> ClientStats:
        """Exact figures for ``client_id`` (all zeros if it never called); ``""`` is the
        bucket of requests that named no client."""
        if not client_id:
            return self.all_stats().get("", ClientStats(client_id=""))
        return ClientStats.from_json(self._call("GET", f"/stats/{_segment(client_id)}"))

    def all_stats(self) -> dict[str, ClientStats]:
        data = self._call("GET", "/stats")["clients"]
        return {client_id: ClientStats.from_json(s) for client_id, s in data.items()}

    def reset_stats(self) -> None:
        """Zero the counters and window maxima; limits and today's budget are untouched."""
        self._call("DELETE", "/stats")

    # --- the consent step, as a browser would do it -----------------------------------------
    def authorize(
        self,
        client_id: str,
        redirect_uri: str,
        scope: str | Sequence[str],
        state: str,
        code_challenge: str | None = None,
        account: SandboxAccount | str | None = None,
    ) -> str:
        """Run ``GET /authorize`` and click Allow on the consent page; return the code.

        ``account`` (sub or email) picks who approves; by default the first account (one is
        created when the sandbox has none). Raises SandboxControlError if the sandbox refuses
        or redirects with an ``error``.
        """
        query = self._consent(
            client_id, redirect_uri, scope, state, code_challenge, account, "allow"
        )
        if "error" in query:
            raise SandboxControlError(
                HTTPStatus.FOUND, f"{query['error']}: {query.get('error_description', '')}"
            )
        if query.get("state") != state:
            raise SandboxControlError(
                HTTPStatus.FOUND, "the redirect did not carry the request's state"
            )
        return query["code"]

    def deny(
        self,
        client_id: str,
        redirect_uri: str,
        scope: str | Sequence[str],
        state: str,
        code_challenge: str | None = None,
    ) -> dict[str, str]:
        """Click Deny on the consent page; returns the redirect's query parameters."""
        return self._consent(client_id, redirect_uri, scope, state, code_challenge, None, "deny")

    def _consent(
        self,
        client_id: str,
        redirect_uri: str,
        scope: str | Sequence[str],
        state: str,
        code_challenge: str | None,
        account: SandboxAccount | str | None,
        decision: str,
    ) -> dict[str, str]:
        params = {
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": scope if isinstance(scope, str) else " ".join(scope),
            "state": state,
        }
        if code_challenge:
            params.update(code_challenge=code_challenge, code_challenge_method="S256")
        if account is not None:
            params["login_hint"] = _account_key(account)
        page = self.session.get(
            self.authorize_url, params=params, allow_redirects=False, timeout=self.timeout
        )
        if page.status_code == HTTPStatus.OK:
            txn = re.search(r'name="txn" value="([^"]+)"', page.text)
            if txn is None:
                raise SandboxControlError(page.status_code, "no consent form on the page")
            chosen = _account_key(account) if account is not None else _default_choice(page.text)
            page = self.session.post(
                self.authorize_url,
                data={"txn": html.unescape(txn.group(1)), "decision": decision, "account": chosen},
                allow_redirects=False,
                timeout=self.timeout,
            )
        if page.status_code != HTTPStatus.FOUND:
            error = re.search(r'<p id="error">([^<]*)</p>', page.text)
            message = html.unescape(error.group(1)) if error else page.text[:200]
            raise SandboxControlError(page.status_code, message)
        location = page.headers["Location"]
        return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def _default_choice(page: str) -> str:
    """The account a browser would submit: the selected (or first) option, or the hidden one."""
    selected = re.search(r'<option value="([^"]+)" selected>', page)
    first = selected or re.search(r'(?:<option|id="account" name="account") value="([^"]+)"', page)
    return html.unescape(first.group(1)) if first else ""

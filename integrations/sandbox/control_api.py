"""The control and observation API under ``/__sandbox/`` (JSON in, JSON out).

Tests and benchmarks drive the sandbox through it (``control.SandboxControl`` is the client):
register clients, create accounts and seed data, inject faults, move the clock, rotate keys,
read exact stats, reset. Errors are ``{"error": "..."}`` with 400, 404 or 409. Every endpoint is
listed in README.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from werkzeug.wrappers import Request

from integrations.sandbox import activities, oauth
from integrations.sandbox.clock import iso, parse_iso
from integrations.sandbox.faults import (
    ACTIVITY_END_STATES,
    API_FAULT_KINDS,
    TIMEOUT_ENDINGS,
    TOKEN_FAULT_KINDS,
    ActivityFault,
    ApiFault,
    TokenFault,
)
from integrations.sandbox.responses import Reply, control_error, json_reply
from integrations.sandbox.state import Sandbox, SandboxError

PREFIX = "/__sandbox"

Handler = Callable[[Sandbox, Request, dict[str, str]], Reply]


def _body(request: Request) -> dict[str, Any]:
    data = request.get_data(cache=True)
    if not data.strip():
        return {}
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise SandboxError("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise SandboxError("the request body must be a JSON object")
    return body


def _count(body: dict[str, Any]) -> int:
    count = body.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise SandboxError("count must be a whole number >= 1")
    return count


def _number(body: dict[str, Any], name: str, default: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise SandboxError(f"{name} must be a non-negative number")
    return float(value)


def _clock(sandbox: Sandbox) -> dict[str, Any]:
    return {"now": iso(sandbox.now()), "offset_seconds": round(sandbox.clock.offset, 3)}


# --- handlers --------------------------------------------------------------------------------
def health(sandbox: Sandbox, request: Request, params: dict[str, str]) -> Reply:
    return json_reply({"status": "ok", **_clock(sandbox)})


def reset(sandbox: Sandbox, request: Request, params: dict[str, str]) -> Reply:
    sandbox.reset()
    return json_reply({"status": "reset"})


def options(sandbox: Sandbox, request: Request, params: dict[str, str]) -> Reply:
    if request.method in ("PATCH", "PUT", "POST"):
        with sandbox.lock:
            sandbox.options.update(_body(request))
    return json_reply(sandbox.options.as_dict())


def clients(sandbox: Sandbox, request: Request, params: dict[str, str]) -> Reply:
    if request.method == "POST":
        client, created = sandbox.register_client(_body(request))
        status = HTTPStatus.CREATED if created else HTTPStatus.OK
        return json_reply(client.as_dict(), status)
    with sandbox.lock:
        return json_reply({"clients": [c.as_dict() for c in sandbox.clients.values()]})


def accounts(sandbox: Sandbox, request: Request, params: dict[str, str]) -> Reply:
    if request.method == "POST":
        account, created = sandbox.create_account(_body(request))
        status = HTTPStatus.CREATED if created else HTTPStatus.OK
        return json_reply(account.as_dict(), status)
    with sandbox.lock:
        return json_reply({"accounts": [a.as_dict() for a in sandbox.accounts.values()]})


def account_detail(sandbox: Sandbox, request: Request, params: dict[str, str]) -> Reply:
    account = sandbox.get_account(params["account"])
    with sandbox.lock:
        activities.settle(sandbox, account)
        data = account.as_dict()
        data["contact_lists"] = [
            {"list_id": lst.list_id, "name": lst.name, "membership_count": len(lst.members)}
            for lst in account.lists.values()
        ]
        data["queued_activities"] = activities.queued_count(account)
    return json_reply(data)


def lists(sandbox: Sandbox, request: Request, params: dict[str, str]) -> Reply:
    account = sandbox.get_account(params["account"])
    contact_list, created = sandbox.seed_list(account, _body(request))
    data = {
        "list_id": contact_list.list_id,
        "name": contact_list.name,
        "membership_count": len(contact_list.members),
    }
    return json_reply(data, HTTPStatus.CREATED if created else HTTPStatus.OK)


def contacts(sandbox: Sandbox, request: Request, params: dict[str, str]) -> Reply:
    account = sandbox.get_account(params["account"])
    result = sandbox.seed_contacts(account, _body(request))
    return json_reply(result, HTTPStatus.CREATED)


def members(sandbox: Sandbox, request: Request, params: dict[str, str]) -> Reply:
    account = sandbox.get_account(params["account"])
    with sandbox.lock:
        activities.settle(sandbox, account)
        contact_list = account.lists.get(params["list_id"])
        if contact_list is None:
            raise SandboxError(
                f"no list {params['list_id']!r} in that account", status=HTTPStatus.NOT_FOUND
            )
        by_id = account.contacts_by_id
        rows = [
            {
                "contact_id": contact_id,
                "email": by_id[contact_id].email,
                "permission_to_send": by_id[contact_id].permission_to_send,
            }
            for contact_id in contact_list.members
        ]
    return json_reply(
        {
            "list_id": contact_list.list_id,
            "name": contact_list.name,
            "count": len(rows),
            "members": rows,
        }
    )


def tokens(sandbox: Sandbox, request: Request, params: dict[str, str]) -> Reply:
    body = _body(request)
    client = sandbox.clients.get(body.get("client_id", ""))
    if client is None:
        raise SandboxError("client_id names no registered client", status=HTTPStatus.NOT_FOUND)
    with sandbox.lock:
        account = (
            sandbox.get_account(body["account"])
            if body.get("account")
            else sandbox.default_account()
        )
        scopes = oauth.split_scopes(body.get("scope", "contact_data offline_access"))
        unknown = [scope for scope in scopes if scope not in oauth.KNOWN_SCOPES]
        if unknown:
            raise SandboxError(f"unknown scopes: {' '.join(unknown)}")
        return json_reply(oauth.issue_tokens(sandbox, client, account, scopes))


def api_faults(sandbox: Sandbox, request: Request, params: dict[str, str]) -> Reply:
    body = _body(request)
    kind = str(body.get("kind", ""))
    if kind not in API_FAULT_KINDS:
        raise SandboxError(f"kind must be one of {', '.join(API_FAULT_KINDS)}")
    then = str(body.get("then", "504"))
    if then not in TIMEOUT_ENDINGS:
        raise SandboxError(f"then must be one of {', '.join(TIMEOUT_ENDINGS)}")
    fault = ApiFault(
        kind=kind,
        remaining=_count(body),
        client_id=body.get("client_id"),
        path=body.get("path"),
        hold_seconds=_number(body, "hold_seconds", sandbox.options.timeout_hold_seconds),
        then=then,
        method=str(body["method"]).upper() if body.get("method") else None,
        applied_first=_flag(body, "applied_first"),
    )
    if fault.applied_first and kind != "timeout":
        raise SandboxError("applied_first applies to timeout faults only")
    sandbox.faults.add_api(fault)
    return json_reply(sandbox.faults.describe(), HTTPStatus.CREATED)


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise SandboxError(f"{name} must be true or false")
    return value


def token_faults(sandbox: Sandbox, request: Request, params: dict[str, str]) -> Reply:
    body = _body(request)
    kind = str(body.get("kind", ""))
    if kind not in TOKEN_FAULT_KINDS:
        raise SandboxError(f"kind must be one of {', '.join(TOKEN_FAULT_KINDS)}")
    then = str(body.get("then", "503"))
    if then not in ("503", "reset"):
        raise SandboxError("then must be 503 or reset")
    fault = TokenFault(
        kind=kind,
        remaining=_count(body),
        client_id=body.get("client_id"),
        hold_seconds=_number(body, "hold_seconds", sandbox.options.timeout_hold_seconds),
        then=then,
        applied_first=_flag(body, "applied_first"),
    )
    if fault.applied_first and kind != "timeout":
        raise SandboxError("applied_first applies to timeout faults only")
    sandbox.faults.add_token(fault)
    return json_reply(sandbox.faults.describe(), HTTPStatus.CREATED)


def activity_faults(sandbox: Sandbox, request: Request, params: dict[str, str]) -> Reply:
    body = _body(request)
    state = str(body.get("state", ""))
    if state not in ACTIVITY_END_STATES:
        raise SandboxError(f"state must be one of {', '.join(ACTIVITY_END_STATES)}")
    kind = body.get("kind")
    if kind is not None and kind not in activities.KINDS:
        raise SandboxError(f"kind must be one of {', '.join(activities.KINDS)}")
    sandbox.faults.add_activity(ActivityFault(state=state, remaining=_count(body), kind=kind))
    return json_reply(sandbox.faults.describe(), HTTPStatus.CREATED)


def outage(sandbox: Sandbox, request: Request, params: dict[str, str]) -> Reply:
    body = _body(request)
    seconds = _number(body, "seconds", 0)
    if not seconds:
        raise SandboxError("seconds must be more than 0")
    starter = sandbox.faults.outage_starter
    if starter is None:
        raise SandboxError("this sandbox runs without its own listener", status=HTTPStatus.CONFLICT)
    starter(seconds)
    return json_reply({"outage_seconds": seconds}, HTTPStatus.ACCEPTED)


def account_activities(sandbox: Sandbox, request: Request, params: dict[str, str]) -> Reply:
    account = sandbox.get_account(params["account"])
    with sandbox.lock:
        activities.settle(sandbox, account)
        return json_reply(activities.applied_log(account))


def faults(sandbox: Sandbox, request: Request, params: dict[str, str]) -> Reply:
    if request.method == "DELETE":
        sandbox.faults.clear()
    return json_reply(sandbox.faults.describe())


def jitter(sandbox: Sandbox, request: Request, params: dict[str, str]) -> Reply:
    body = _body(request)
    try:
        sandbox.faults.set_jitter(_number(body, "min_ms", 0), _number(body, "max_ms", 0))
    except ValueError as error:
        raise SandboxError(str(error)) from None
    return json_reply(sandbox.faults.describe()["jitter"])


def clock(sandbox: Sandbox, request: Request, params: dict[str, str]) -> Reply:
    if request.method == "POST":
        body = _body(request)
        if "now" in body:
            try:
                sandbox.clock.set(parse_iso(str(body["now"])))
            except ValueError:
                raise SandboxError("now must be an ISO-8601 date-time") from None
        elif "advance_seconds" in body:
            value = body["advance_seconds"]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SandboxError("advance_seconds must be a number")
            sandbox.clock.advance(value)
        else:
            raise SandboxError("give advance_seconds or now")
    return json_reply(_clock(sandbox))


def keys(sandbox: Sandbox, request: Request, params: dict[str, str]) -> Reply:
    return json_reply(sandbox.keys.describe())


def rotate_keys(sandbox: Sandbox, request: Request, params: dict[str, str]) -> Reply:
    body = _body(request)
    retain = _number(body, "retain_seconds", sandbox.options.key_retention_seconds)
    sandbox.keys.rotate(retain_seconds=retain)
    return json_reply(sandbox.keys.describe(), HTTPStatus.CREATED)


def _client_stats(sandbox: Sandbox, client_id: str) -> dict[str, Any]:
    figures = sandbox.stats.snapshot(client_id)
    figures.update(sandbox.limiter.snapshot(client_id, sandbox.clock.today()))
    return figures


def stats(sandbox: Sandbox, request: Request, params: dict[str, str]) -> Reply:
    if request.method == "DELETE":
        sandbox.stats.reset()
        sandbox.limiter.reset_maxima()
        sandbox.faults.reset_injected()
    ids = sorted(sandbox.stats.client_ids() | sandbox.limiter.client_ids() | set(sandbox.clients))
    return json_reply(
        {
            "clients": {cid: _client_stats(sandbox, cid) for cid in ids},
            "injected": sandbox.faults.injected_counts(),
        }
    )


def client_stats(sandbox: Sandbox, request: Request, params: dict[str, str]) -> Reply:
    return json_reply(_client_stats(sandbox, params["client_id"]))


# --- routing ---------------------------------------------------------------------------------
def _route(
    template: str, methods: dict[str, Handler]
) -> tuple[re.Pattern[str], dict[str, Handler]]:
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", PREFIX + template)
    return re.compile(f"^{regex}/?$"), methods


ROUTES = (
    _route("/health", {"GET": health}),
    _route("/reset", {"POST": reset}),
    _route("/options", {"GET": options, "PATCH": options, "PUT": options}),
    _route("/clients", {"GET": clients, "POST": clients}),
    _route("/accounts", {"GET": accounts, "POST": accounts}),
    _route("/accounts/{account}", {"GET": account_detail}),
    _route("/accounts/{account}/lists", {"POST": lists}),
    _route("/accounts/{account}/contacts", {"POST": contacts}),
    _route("/accounts/{account}/lists/{list_id}/members", {"GET": members}),
    _route("/accounts/{account}/activities", {"GET": account_activities}),
    _route("/tokens", {"POST": tokens}),
    _route("/faults", {"GET": faults, "DELETE": faults}),
    _route("/faults/api", {"POST": api_faults}),
    _route("/faults/token", {"POST": token_faults}),
    _route("/faults/activity", {"POST": activity_faults}),
    _route("/faults/outage", {"POST": outage}),
    _route("/faults/jitter", {"PUT": jitter, "POST": jitter}),
    _route("/clock", {"GET": clock, "POST": clock}),
    _route("/keys", {"GET": keys}),
    _route("/keys/rotate", {"POST": rotate_keys}),
    _route("/stats", {"GET": stats, "DELETE": stats}),
    _route("/stats/{client_id}", {"GET": client_stats}),
)


def handle(sandbox: Sandbox, request: Request) -> Reply:
    for pattern, methods in ROUTES:
        match = pattern.match(request.path)
        if match is None:
            continue
        handler = methods.get(request.method)
        if handler is None:
            return control_error(
                HTTPStatus.METHOD_NOT_ALLOWED, f"use {' or '.join(methods)} on {request.path}"
            )
        try:
            return handler(sandbox, request, match.groupdict())
        except SandboxError as error:
            return control_error(error.status, str(error))
    return control_error(HTTPStatus.NOT_FOUND, f"no control endpoint at {request.path}")

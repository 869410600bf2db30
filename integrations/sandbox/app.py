"""The sandbox as one WSGI application: routing, metering, faults, then the handlers.

Order for a ``/v3`` request (all documented in README.md):

1. arrival jitter, if configured (a sleep *before* the request is counted);
2. the bearer token's ``cid`` names the client; a registered client's request is counted by
   the limiter, which may answer 429 ``throttled`` or ``quota_exceeded``;
3. a pending API fault, if one applies, answers instead (500, 503, timeout, reset); a timeout
   ``applied_first`` carries the request out first and loses only its answer;
4. the token is checked (401/403), due activities are settled, the handler runs;
5. the outcome is recorded in the stats before the response is sent.

Token requests follow the same order with the token limiter (1/s per client_id) and token
faults. The OAuth pages, the JWKS and the control API are neither limited nor counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from werkzeug.wrappers import Request

from integrations.constant_contact.endpoints import API_PATH, AUTHORIZE_PATH, TOKEN_PATH
from integrations.sandbox import api, control_api, oauth
from integrations.sandbox.faults import ApiFault, DropConnection
from integrations.sandbox.limits import Verdict
from integrations.sandbox.responses import (
    Reply,
    gateway_timeout,
    internal_error,
    json_reply,
    quota_exceeded,
    service_unavailable,
    throttled,
)
from integrations.sandbox.state import Sandbox
from integrations.sandbox.stats import QUOTA_EXCEEDED, RESET, THROTTLED, TIMEOUT

logger = logging.getLogger("integrations.sandbox")

StartResponse = Callable[..., Any]


class SandboxApp:
    """WSGI callable serving every sandbox endpoint from one :class:`Sandbox`."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        try:
            reply = self.handle(request)
        except DropConnection:
            raise
        except Exception:
            # The path only: query strings can carry codes and tokens.
            logger.exception("sandbox error on %s %s", request.method, request.path)
            reply = internal_error()
        start_response(reply.status_line(), reply.header_list())
        return [reply.body]

    def handle(self, request: Request) -> Reply:
        path = request.path
        if path == API_PATH or path.startswith(API_PATH + "/"):
            return self._api(request)
        if path == TOKEN_PATH:
            return self._token(request)
        if path == AUTHORIZE_PATH:
            return oauth.authorize(self.sandbox, request)
        if path in oauth.JWKS_PATHS:
            return oauth.jwks(self.sandbox)
        if path.startswith(control_api.PREFIX):
            return control_api.handle(self.sandbox, request)
        if path == "/":
            return json_reply(
                {
                    "service": "Constant Contact sandbox",
                    "authorize": AUTHORIZE_PATH,
                    "token": TOKEN_PATH,
                    "jwks": oauth.JWKS_PATHS[0],
                    "api": API_PATH,
                    "control": control_api.PREFIX,
                }
            )
        return json_reply({"error": f"nothing at {path}"}, HTTPStatus.NOT_FOUND)

    # --- /v3 ---------------------------------------------------------------------------------
    def _api(self, request: Request) -> Reply:
        sandbox = self.sandbox
        delay = sandbox.faults.jitter_seconds()
        if delay:
            time.sleep(delay)
        route, params = api.resolve(request.path)
        label = f"{request.method} {route.template if route else '(unknown)'}"
        check = oauth.inspect_bearer(sandbox, _bearer(request))
        client_id = check.client_id
        client = sandbox.clients.get(client_id)
        if client is not None:
            verdict = sandbox.limiter.admit_api(
                client_id,
                per_second=client.per_second,
                per_day=client.per_day,
                today=sandbox.clock.today(),
                count_rejected=sandbox.options.count_rejected,
            )
            if verdict is not Verdict.ACCEPTED:
                throttled_now = verdict is Verdict.THROTTLED
                reply = throttled() if throttled_now else quota_exceeded()
                outcome = THROTTLED if throttled_now else QUOTA_EXCEEDED
                sandbox.stats.record_api(client_id, label, status=reply.status, outcome=outcome)
                return reply
        fault = sandbox.faults.take_api(client_id, request.path, request.method)
        if fault is not None:
            if fault.kind == "timeout" and fault.applied_first:
                self._serve_api(request, check, route, params)
            return self._fault(fault, client_id, label)
        reply = self._serve_api(request, check, route, params)
        sandbox.stats.record_api(client_id, label, status=reply.status)
        return reply

    def _serve_api(self, request: Request, check, route, params) -> Reply:
        """Authenticate and run the handler (no metering: the caller records the outcome)."""
        sandbox = self.sandbox
        caller = oauth.authenticate(sandbox, check, route.scope if route else api.CONTACT_DATA)
        if isinstance(caller, Reply):
            reply = caller
        else:
            try:
                reply = api.dispatch(sandbox, request, caller, route, params)
            except Exception:
                logger.exception("sandbox error on %s %s", request.method, request.path)
                reply = internal_error()
        return reply

    def _fault(self, fault: ApiFault, client_id: str, label: str) -> Reply:
        stats = self.sandbox.stats
        if fault.kind in ("500", "503"):
            reply = internal_error() if fault.kind == "500" else service_unavailable()
            stats.record_api(client_id, label, status=reply.status)
            return reply
        if fault.kind == "timeout":
            # Recorded before the hold: the client gives up long before the hold ends.
            ends_in_reset = fault.then == "reset"
            status = None if ends_in_reset else HTTPStatus.GATEWAY_TIMEOUT
            stats.record_api(client_id, label, status=status, outcome=TIMEOUT)
            self.sandbox.faults.hold(fault.hold_seconds)
            if ends_in_reset:
                raise DropConnection("timeout fault")
            return gateway_timeout()
        stats.record_api(client_id, label, status=None, outcome=RESET)
        raise DropConnection("reset fault")

    # --- token endpoint ----------------------------------------------------------------------
    def _token(self, request: Request) -> Reply:
        sandbox = self.sandbox
        delay = sandbox.faults.jitter_seconds()
        if delay:
            time.sleep(delay)
        params = oauth.token_params(request)
        presented = oauth.presented_client(request, params)
        client_id = presented.client_id
        per_second = sandbox.options.token_requests_per_second
        verdict = sandbox.limiter.admit_token(
            client_id, per_second=per_second, count_rejected=sandbox.options.count_rejected
        )
        limited = verdict is not Verdict.ACCEPTED
        if limited:
            reply = oauth.token_throttled(per_second)
        else:
            fault = sandbox.faults.take_token(client_id)
            if fault is None:
                reply = oauth.token(sandbox, request, params, presented)
            elif fault.kind == "timeout":
                if fault.applied_first:  # the tokens are issued (a refresh token rotated)
                    oauth.token(sandbox, request, params, presented)
                reply = oauth.token_unavailable()
                sandbox.stats.record_token(client_id, status=reply.status, error=reply.error_code)
                sandbox.faults.hold(fault.hold_seconds)
                if fault.then == "reset":
                    raise DropConnection("token timeout fault")
                return reply
            elif fault.kind == "429":
                reply = oauth.token_throttled(per_second)
            elif fault.kind == "503":
                reply = oauth.token_unavailable()
            else:
                description = (
                    oauth.INVALID_REFRESH
                    if params.get("grant_type") == "refresh_token"
                    else oauth.INVALID_CODE
                )
                reply = oauth.invalid_grant(description)
        sandbox.stats.record_token(
            client_id, status=reply.status, error=reply.error_code, throttled=limited
        )
        return reply


def _bearer(request: Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return None

"""The proxy: applications in any language call CC's v3 API through ccportal.

An application holds a portal token (``services.proxy_tokens``), never CC's tokens. For each
request :func:`proxy_forward` picks the account (the token's, or the ``X-CC-Account`` it
names), books the slot in the key's shared ledger (fair share between accounts included; no
longer than the lane's maximum wait), injects a valid access token, forwards method, path,
query, body and content type to the configured CC API base only, records the call under the
token's name, and hands CC's answer back: whole when it is small, else unread, to be
streamed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from integrations import conf
from integrations.errors import PortalError
from integrations.models import ConnectedAccount, Lane, ProxyToken
from integrations.services import gateway, quota
from integrations.services.audit import calls_made_through
from integrations.services.proxy_tokens import ProxyCaller
from integrations.services.tokens import AccountNotConnected

#: Bytes handed on at a time while streaming CC's answer.
CHUNK_BYTES = 64 * 1024
#: CC's answer headers passed on besides the status and Content-Type.
PASSED_HEADERS = ("Content-Disposition", "Link")


class ProxyRefused(PortalError):
    """The proxy will not send this request; subclasses say why (the view picks the status)."""


class AccountNotChosen(ProxyRefused):
    """The token covers several accounts and the request named none (or one that is not a
    number)."""


class AccountOutsideScope(ProxyRefused):
    """The request names an account the token does not cover."""


class AccountNeedsReconnect(ProxyRefused):
    """The account has no usable tokens; someone must reconnect it (``account`` says which)."""

    def __init__(self, message: str, *, account: ConnectedAccount) -> None:
        super().__init__(message)
        self.account = account


class BodyTooLarge(ProxyRefused):
    """The request body is larger than the proxy forwards."""


class LaneUnknown(ProxyRefused):
    """``X-CC-Lane`` names no lane."""


@dataclass
class ProxyAnswer:
    """CC's answer, to be passed on as it is: status, content type, the headers worth passing,
    the body, the call-log entry, and what is left of today's budget for the lane.

    A body CC declares at most ``CHUNK_BYTES`` long is read whole (bytes) and answered in one
    piece; any other is an iterator of chunks, read from CC as they are sent on, so an export
    of any size passes through in constant memory."""

    status: int
    content_type: str
    body: bytes | Iterator[bytes]
    call_id: int
    quota_remaining: int
    headers: dict[str, str] = field(default_factory=dict)


def proxy_account(caller: ProxyCaller, requested: str | None) -> ConnectedAccount:
    """The account a request is for: ``requested`` (a portal account id), or the token's only
    account."""
    token, accounts = caller.token, caller.accounts
    if not accounts:
        raise AccountOutsideScope(f"The token {token.name!r} covers no account any more.")
    if requested in (None, ""):
        if len(accounts) == 1:
            return next(iter(accounts.values()))
        raise AccountNotChosen(
            f"The token {token.name!r} covers {len(accounts)} accounts: name one with "
            f"X-CC-Account (one of {', '.join(str(pk) for pk in sorted(accounts))})."
        )
    try:
        account_id = int(str(requested).strip())
    except ValueError:
        raise AccountNotChosen(
            f"X-CC-Account must be a portal account id (a number), not {requested!r}."
        ) from None
    if account_id not in accounts:
        raise AccountOutsideScope(f"The token {token.name!r} does not cover account {account_id}.")
    return accounts[account_id]


def proxy_lane(token: ProxyToken, requested: str | None) -> str:
    if not requested:
        return token.lane
    try:
        return Lane.check(requested.strip().lower())
    except ValueError as exc:
        raise LaneUnknown(f"X-CC-Lane: {exc}.") from None


def proxy_body_check(length: int) -> None:
    limit = conf.proxy_max_body_bytes()
    if length > limit:
        raise BodyTooLarge(
            f"The request body is {length:,} bytes; the proxy forwards at most {limit:,} "
            "(CC takes import payloads under 4 MB)."
        )


def proxy_forward(
    *,
    caller: ProxyCaller,
    account_id: str | None,
    lane: str | None,
    method: str,
    path: str,
    body: bytes,
    content_type: str | None,
    accept: str | None,
) -> ProxyAnswer:
    """Send one application request to CC for the token's account and answer with CC's.

    Raises :class:`ProxyRefused` subclasses, ``gateway.PathOutsideApi``, ``quota.QuotaBusy``
    (the slot is further away than the lane's maximum wait), ``quota.QuotaExhausted`` (the
    lane's budget or the account's cap is spent), ``quota.QuotaStoreUnavailable``, and the
    client's ``CCTransportError`` / ``CCActivityQueueFull``. Nothing is sent when any of them
    is raised before CC answered.
    """
    token = caller.token
    account = proxy_account(caller, account_id)
    lane = proxy_lane(token, lane)
    proxy_body_check(len(body))
    gateway.api_path_check(path)
    health = account.health()
    if health.code in ("needs_reconnect", "disconnected", "tokens_unreadable"):
        raise AccountNeedsReconnect(
            f"CC account {account.display_name} is {health.label.lower()}: {health.reason}",
            account=account,
        )
    try:
        with calls_made_through(token):
            exchange = gateway.cc_forward(
                account=account,
                method=method,
                path=path,
                body=body,
                content_type=content_type,
                accept=accept or "*/*",
                lane=lane,
                max_wait=conf.proxy_max_wait(lane),
                proxy_token_id=token.pk,
                # Read with the portal token, a moment ago: not read again before the send.
                account_just_read=True,
            )
    except AccountNotConnected as exc:
        raise AccountNeedsReconnect(str(exc), account=account) from None
    response = exchange.response
    budget = quota.key_quota(account.api_key).budget(background=lane == Lane.BACKGROUND)
    return ProxyAnswer(
        status=response.status_code,
        content_type=response.headers.get("Content-Type", ""),
        body=_body(response),
        call_id=exchange.call.pk,
        quota_remaining=max(0, budget - exchange.slot.day_count),
        headers={
            name: response.headers[name] for name in PASSED_HEADERS if name in response.headers
        },
    )


def _body(response) -> bytes | Iterator[bytes]:
    """CC's body: whole when it declares at most ``CHUNK_BYTES``, else as it arrives."""
    declared = response.headers.get("Content-Length", "")
    if not (declared.isdigit() and int(declared) <= CHUNK_BYTES):
        return _chunks(response)
    try:
        return response.content
    finally:
        response.close()


def _chunks(response) -> Iterator[bytes]:
    """CC's body as it arrives (an error body was read already and comes from memory)."""
    try:
        yield from response.iter_content(chunk_size=CHUNK_BYTES)
    finally:
        response.close()

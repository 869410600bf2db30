"""Connecting CC accounts: the authorization-code flow (with PKCE where the key uses it),
the callback, and disconnect.

Guarantees:

* ``state`` carries 256 random bits, is bound to the browser session, single-use and lives 10
  minutes; a callback with a missing, unknown, replayed, expired or other-session state is
  refused before any token call.
* The PKCE verifier lives only in the server-side session; it never appears in a URL, a log or
  a page.
* ``redirect_uri`` is always the key's registered value — never built from the Host header.
* The access token is validated (RS256 against CC's JWKS, iss, aud, exp) before anything is
  stored; tokens are stored encrypted; the CC identity comes from the validated token.
* Once connected, the account is named from CC's account summary (one call through the
  gateway); a summary that cannot be read never undoes or fails the connect.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.views.decorators.debug import sensitive_variables

from integrations import conf, crypto
from integrations.constant_contact import oauth as cc_oauth
from integrations.constant_contact.errors import CCError, CCTransportError, OAuthError
from integrations.errors import PortalError, Unavailable
from integrations.models import AccountStatus, ApiKey, ConnectedAccount
from integrations.services import gateway
from integrations.services.jwt import InvalidAccessToken, access_token_validate
from integrations.services.quota import QuotaStoreUnavailable
from integrations.services.tokens import token_endpoint_call, tokens_store_new_connection

logger = logging.getLogger(__name__)

SESSION_KEY = "cc_oauth_pending"
MAX_PENDING = 5
#: The scope CC's ``GET /account/summary`` needs.
ACCOUNT_READ = "account_read"


class ConnectError(PortalError):
    """A connect attempt that cannot complete; the message is safe to show to the user."""


class ConnectUnavailable(ConnectError, Unavailable):
    """CC's token endpoint or ccportal's quota store could not be reached; try again soon."""


class ConnectDenied(ConnectError):
    """The user pressed Deny on CC's consent page."""


class AccountSwitchNeedsConfirmation(ConnectError):
    """A reconnect signed in to a different CC account than the connection belongs to."""

    def __init__(self, message: str, *, account: ConnectedAccount) -> None:
        super().__init__(message)
        self.account = account


@dataclass(frozen=True)
class ConnectResult:
    account: ConnectedAccount
    created: bool


def connect_start(
    *,
    session: Any,
    api_key: ApiKey,
    reconnect: ConnectedAccount | None = None,
    allow_account_switch: bool = False,
) -> str:
    """Begin the flow: remember a fresh state (and PKCE verifier) in ``session`` and return
    CC's authorize URL to redirect the browser to."""
    crypto.readable(api_key.client_secret)  # no trip to CC with a secret that cannot be sent
    state = secrets.token_urlsafe(32)
    pending = {
        "key": api_key.pk,
        "created": time.time(),
        "reconnect": reconnect.pk if reconnect else None,
        "switch": bool(allow_account_switch),
        "verifier": "",
    }
    challenge = None
    if api_key.use_pkce:
        pending["verifier"], challenge = cc_oauth.pkce_pair()
    entries = dict(session.get(SESSION_KEY, {}))
    entries[state] = pending
    # A few tabs may be mid-connect at once; keep only the newest attempts.
    newest = sorted(entries.items(), key=lambda item: item[1]["created"])[-MAX_PENDING:]
    session[SESSION_KEY] = dict(newest)
    return cc_oauth.authorize_url(
        endpoint=conf.cc_endpoints().authorize_url,
        client_id=api_key.client_id,
        redirect_uri=api_key.redirect_uri,
        scopes=conf.cc_scopes(),
        state=state,
        code_challenge=challenge,
    )


def _pending_take(session: Any, state: str) -> dict[str, Any]:
    """Remove and return the pending attempt for ``state`` (single use), or refuse."""
    if not state:
        raise ConnectError("The answer from Constant Contact had no state; start again.")
    entries = dict(session.get(SESSION_KEY, {}))
    match = next((s for s in entries if hmac.compare_digest(s, state)), None)
    if match is None:
        raise ConnectError(
            "This connect link is not valid for your session (it was used already, or "
            "started in another browser). Start again from the Connect button."
        )
    pending = entries.pop(match)
    session[SESSION_KEY] = entries
    if time.time() - pending["created"] > conf.oauth_state_lifetime_seconds():
        raise ConnectError("This connect attempt expired (10 minutes); start again.")
    return pending


@sensitive_variables()
def connect_complete(*, session: Any, params: dict[str, str]) -> ConnectResult:
    """Finish the flow from the callback's query parameters.

    The state is checked (and spent) before anything else; only then is the code exchanged.
    """
    pending = _pending_take(session, params.get("state", ""))
    if params.get("error"):
        if params["error"] == "access_denied":
            raise ConnectDenied(
                "Connection cancelled: access was denied on Constant Contact's consent page."
            )
        raise ConnectError(f"Constant Contact did not connect the account ({params['error']}).")
    code = params.get("code", "")
    if not code:
        raise ConnectError("The answer from Constant Contact had no authorization code.")
    try:
        api_key = ApiKey.objects.get(pk=pending["key"])
    except ApiKey.DoesNotExist:
        raise ConnectError("The API key this connection started with no longer exists.") from None

    try:
        answer = token_endpoint_call(
            api_key=api_key,
            account=None,
            request=lambda **http: cc_oauth.token_exchange_code(
                client_id=api_key.client_id,
                client_secret=crypto.readable(api_key.client_secret),
                code=code,
                redirect_uri=api_key.redirect_uri,
                code_verifier=pending["verifier"] or None,
                **http,
            ),
        )
    except OAuthError as exc:
        raise ConnectError(f"Constant Contact refused the authorization code: {exc}") from None
    except (CCTransportError, QuotaStoreUnavailable) as exc:
        raise ConnectUnavailable(f"{exc} Try connecting again in a moment.") from None
    try:
        claims = access_token_validate(answer.access_token)
    except InvalidAccessToken as exc:
        raise ConnectError(f"Constant Contact's access token did not validate: {exc}") from None
    if "contact_data" not in claims.scopes:
        raise ConnectError("The connection was not granted the contact_data scope ccportal needs.")

    with transaction.atomic():
        account, created = _account_for(
            api_key=api_key,
            subject=claims.subject,
            reconnect_pk=pending["reconnect"],
            allow_switch=pending["switch"],
        )
        account.cc_user_id = claims.subject
        account.platform_user_id = claims.platform_user_id
        # CC's access token names the user only by id; an email claim, when present, reads better.
        email = (
            claims.raw_claims.get("email")
            if isinstance(claims.raw_claims.get("email"), str)
            else ""
        )
        account.label = account.label or email or claims.subject
        account.scopes = list(answer.scopes or claims.scopes)
        tokens_store_new_connection(account=account, answer=answer, expires_at=claims.expires_at)
    account_names_refresh(account=account)
    return ConnectResult(account=account, created=created)


def account_names_refresh(*, account: ConnectedAccount) -> bool:
    """Store the account's organisation name and login email from CC's account summary.

    One ``GET /account/summary`` through the gateway, so it is booked on the key's quota and
    recorded in the call log like any other call. The login email is the summary's
    ``contact_email``: CC's API has no login field and its access token names the user only by
    id (see :class:`~integrations.constant_contact.client.AccountSummary`).

    Never raises: when the summary cannot be read (``account_read`` not granted, CC or the
    quota store failing) it logs one line and leaves the names as they were, so the account
    is shown by its label or CC user id. Returns whether the names were read.
    """
    if not account.has_scope(ACCOUNT_READ):
        logger.warning(
            "Account %s was not granted %s; it keeps its CC user id as its name.",
            account.pk,
            ACCOUNT_READ,
        )
        return False
    try:
        summary = gateway.cc_client(account=account).account_summary()
    except (CCError, PortalError) as exc:
        logger.warning(
            "Could not read the account summary of account %s: %s",
            account.pk,
            " ".join(str(exc).split()),
        )
        return False
    names = {
        "organization_name": summary.organization_name[:200],
        "login_email": summary.contact_email[:254],
    }
    # An UPDATE of these two columns only: a token refresh may have written the row since.
    ConnectedAccount.objects.filter(pk=account.pk).update(**names)
    for field, value in names.items():
        setattr(account, field, value)
    return True


def _account_for(
    *, api_key: ApiKey, subject: str, reconnect_pk: int | None, allow_switch: bool
) -> tuple[ConnectedAccount, bool]:
    same_user = (
        ConnectedAccount.objects.select_for_update()
        .filter(api_key=api_key, cc_user_id=subject)
        .first()
    )
    if reconnect_pk is None:
        if same_user is not None:
            return same_user, False
        return ConnectedAccount(api_key=api_key), True

    target = ConnectedAccount.objects.select_for_update().filter(pk=reconnect_pk).first()
    if target is None:
        raise ConnectError("The connection being reconnected no longer exists.")
    if target.cc_user_id and target.cc_user_id != subject:
        if not allow_switch:
            raise AccountSwitchNeedsConfirmation(
                f"You signed in to Constant Contact as {subject}, but this connection belongs "
                f"to {target.cc_user_id}. Nothing was changed. To bind it to {subject}, confirm "
                "the switch and connect again.",
                account=target,
            )
        if same_user is not None and same_user.pk != target.pk:
            raise ConnectError(
                f"{subject} is already connected as another connection; reconnect that one."
            )
        # The names were another CC account's; the summary read after the connect sets them.
        target.label = target.organization_name = target.login_email = ""
    return target, False


def account_disconnect(*, account: ConnectedAccount) -> None:
    """Erase the account's tokens (the CC grant itself stays until the user revokes it)."""
    with transaction.atomic():
        locked = ConnectedAccount.objects.select_for_update().get(pk=account.pk)
        locked.access_token = ""
        locked.refresh_token = ""
        locked.access_expires_at = None
        locked.refresh_lease_owner = ""
        locked.refresh_lease_expires_at = None
        locked.status = AccountStatus.DISCONNECTED
        locked.status_reason = "Disconnected in ccportal."
        locked.token_version += 1
        locked.save()
    account.refresh_from_db()

"""CC's OAuth server: authorize (with a consent page), token, JWKS, and access-token checks.

Paths and behaviour follow CC's OAuth guides: ``/oauth2/default/v1/authorize`` and ``/token``;
codes are single use, live 5 minutes and are bound to client and redirect URI; PKCE is S256
only and required of public clients; token requests may carry their parameters in the form body
or the query string and authenticate by HTTP Basic or ``client_secret_post``; refresh tokens
are issued only with ``offline_access`` and are rotating or long-lived per client, dying after
180 idle days. Error descriptions reuse Okta's wording (CC's authorization server is Okta).

Reference: https://developer.constantcontact.com/api_guide/auth_overview.html
Reference: https://developer.constantcontact.com/api_guide/server_flow.html
Reference: https://developer.constantcontact.com/api_guide/pkce_flow.html
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import re
import secrets
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode

import jwt
from werkzeug.wrappers import Request

from integrations.constant_contact.endpoints import AUTHORIZE_PATH, JWKS_PATH
from integrations.sandbox.responses import (
    Reply,
    api_error,
    json_reply,
    oauth_error,
    unauthorized,
)
from integrations.sandbox.state import (
    Account,
    AuthorizationCode,
    Client,
    ConsentRequest,
    RefreshGrant,
    Sandbox,
)

# CC's JWKS path; the sandbox also publishes the keys at the default authorization server's.
JWKS_PATHS = (JWKS_PATH, "/oauth2/default/v1/keys")

# CC's scopes (plus the OpenID scopes Okta accepts).
# Reference: https://developer.constantcontact.com/api_guide/scopes.html
KNOWN_SCOPES = frozenset(
    {
        "account_read",
        "account_update",
        "contact_data",
        "campaign_data",
        "billing_data",
        "offline_access",
        "openid",
        "profile",
        "email",
    }
)
CONSENT_SECONDS = 600
CODE_CHALLENGE_RE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")

INVALID_CODE = "The authorization code is invalid or has expired."
INVALID_REFRESH = "The refresh token is invalid or expired."
REDIRECT_MISMATCH = (
    "The 'redirect_uri' does not match the redirection URI used in the authorization request."
)
TOKEN_THROTTLED = "Too many token requests for this client_id: at most {n} per second."


# --- access tokens ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenCheck:
    """What a bearer token says: its ``cid`` (read without trust, used only to meter the
    request) and, when the signature verifies against a published key, its claims."""

    client_id: str
    kid: str | None
    claims: dict[str, Any] | None


_UNREADABLE = TokenCheck(client_id="", kid=None, claims=None)


def inspect_bearer(sandbox: Sandbox, token: str | None) -> TokenCheck:
    """Read and, if possible, verify ``token``; verified results are cached per token (an
    RS256 check per request would dominate the request cost)."""
    if not token:
        return _UNREADABLE
    cached = sandbox.verified_tokens.get(token)
    if cached is not None:
        return cached
    try:
        header = jwt.get_unverified_header(token)
        payload = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return _UNREADABLE
    client_id = payload.get("cid") if isinstance(payload.get("cid"), str) else ""
    kid = header.get("kid") if isinstance(header.get("kid"), str) else None
    key = sandbox.keys.public_key(kid) if kid else None
    if key is None:
        return TokenCheck(client_id=client_id, kid=kid, claims=None)
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=["RS256"],
            # Time and audience are checked per request against the sandbox clock and options.
            options={"verify_exp": False, "verify_aud": False, "verify_iat": False},
        )
    except jwt.PyJWTError:
        return TokenCheck(client_id=client_id, kid=kid, claims=None)
    check = TokenCheck(client_id=client_id, kid=kid, claims=claims)
    if len(sandbox.verified_tokens) > 50_000:
        sandbox.verified_tokens.clear()
    sandbox.verified_tokens[token] = check
    return check


@dataclass(frozen=True)
class Caller:
    client: Client
    account: Account
    claims: dict[str, Any]


def authenticate(sandbox: Sandbox, check: TokenCheck, scope: str) -> Caller | Reply:
    """The caller behind a bearer token, or CC's 401 (missing, forged, expired, wrong
    audience/issuer, signing key no longer published, client or account unknown) or 403 (no
    ``scope``: the route's, ``contact_data`` or ``account_read``; see
    https://developer.constantcontact.com/api_guide/scopes.html)."""
    claims = check.claims
    if claims is None or check.kid is None or not sandbox.keys.is_published(check.kid):
        return unauthorized()
    options = sandbox.options
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if claims.get("iss") != options.issuer or options.audience not in audiences:
        return unauthorized()
    expires = claims.get("exp")
    if not isinstance(expires, (int, float)) or expires <= sandbox.now():
        return unauthorized()
    client = sandbox.clients.get(claims.get("cid", ""))
    account = sandbox.accounts.get(claims.get("sub", ""))
    if client is None or account is None:
        return unauthorized()
    scopes = claims.get("scp") or []
    if scope not in scopes:
        return api_error(
            HTTPStatus.FORBIDDEN,
            "forbidden",
            f"Forbidden request. The access token lacks the {scope} scope.",
        )
    return Caller(client=client, account=account, claims=claims)


def issue_tokens(
    sandbox: Sandbox, client: Client, account: Account, scopes: list[str]
) -> dict[str, Any]:
    """A token response: a signed access token and, with ``offline_access``, a new refresh
    token. Refresh tokens are opaque 43-character strings (CC's are short opaque strings too,
    see https://developer.constantcontact.com/api_guide/server_flow.html)."""
    body = _token_body(sandbox, client, account, scopes)
    if "offline_access" in scopes:
        body["refresh_token"] = _new_refresh_token(sandbox, client, account.sub, scopes)
    return body


def _new_refresh_token(sandbox: Sandbox, client: Client, sub: str, scopes: list[str]) -> str:
    now = sandbox.now()
    refresh_token = secrets.token_urlsafe(32)
    sandbox.refresh_grants[refresh_token] = RefreshGrant(
        client_id=client.client_id, sub=sub, scopes=list(scopes), issued_at=now, last_used_at=now
    )
    return refresh_token


def _token_body(
    sandbox: Sandbox, client: Client, account: Account, scopes: list[str]
) -> dict[str, Any]:
    options = sandbox.options
    issued_at = int(sandbox.now())
    lifetime = client.access_token_lifetime or options.access_token_lifetime
    claims = {
        "ver": 1,
        "jti": "AT." + secrets.token_urlsafe(24),
        "iss": options.issuer,
        "aud": options.audience,
        "iat": issued_at,
        "exp": issued_at + lifetime,
        "cid": client.client_id,
        "uid": account.sub,
        "scp": list(scopes),
        "auth_time": issued_at,
        "sub": account.sub,
        "platform_user_id": account.platform_user_id,
    }
    return {
        "token_type": "Bearer",
        "expires_in": lifetime,
        "access_token": sandbox.keys.sign(claims),
        "scope": " ".join(scopes),
    }


def jwks(sandbox: Sandbox) -> Reply:
    return json_reply(sandbox.keys.jwks())


# --- authorize -------------------------------------------------------------------------------
def authorize(sandbox: Sandbox, request: Request) -> Reply:
    if request.method == "GET":
        return _authorize_request(sandbox, request)
    if request.method == "POST":
        return _consent_decision(sandbox, request)
    return _html_error(HTTPStatus.METHOD_NOT_ALLOWED, "Use GET (or POST from the consent page).")


def _authorize_request(sandbox: Sandbox, request: Request) -> Reply:
    args = request.args
    client = sandbox.clients.get(args.get("client_id", ""))
    if client is None:
        return _html_error(HTTPStatus.BAD_REQUEST, "Unknown client_id.")
    redirect_uri = args.get("redirect_uri", "")
    # CC matches redirect URIs exactly; an unknown one is never redirected to (RFC 6749,
    # section 4.1.2.1).
    if redirect_uri not in client.redirect_uris:
        return _html_error(
            HTTPStatus.BAD_REQUEST,
            "The 'redirect_uri' parameter must be a Login redirect URI in the client app settings.",
        )
    state = args.get("state", "")

    def fail(error: str, description: str) -> Reply:
        return _redirect(redirect_uri, error=error, error_description=description, state=state)

    if not state:
        return fail(
            "invalid_request", "The authentication request has an invalid 'state' parameter."
        )
    if args.get("response_type") != "code":
        return fail("unsupported_response_type", "The response type is not supported.")
    scopes = split_scopes(args.get("scope", ""))
    if not scopes:
        return fail("invalid_scope", "The 'scope' parameter is required.")
    unknown = [scope for scope in scopes if scope not in KNOWN_SCOPES]
    if unknown:
        return fail("invalid_scope", f"One or more scopes are not configured: {' '.join(unknown)}.")
    challenge = args.get("code_challenge") or None
    if challenge is not None:
        if args.get("code_challenge_method") != "S256":
            return fail("invalid_request", "The 'code_challenge_method' must be 'S256'.")
        if not CODE_CHALLENGE_RE.match(challenge):
            return fail("invalid_request", "The 'code_challenge' parameter is invalid.")
    elif client.is_public:
        return fail(
            "invalid_request",
            "PKCE code challenge is required when the token endpoint authentication method "
            "is 'NONE'.",
        )
    consent = ConsentRequest(
        client_id=client.client_id,
        redirect_uri=redirect_uri,
        scopes=scopes,
        state=state,
        code_challenge=challenge,
        expires_at=time.monotonic() + CONSENT_SECONDS,
    )
    with sandbox.lock:
        if client.auto_approve:
            hint = args.get("login_hint")
            account = sandbox.find_account(hint) if hint else sandbox.default_account()
            if account is None:
                return fail("access_denied", "The login_hint names no sandbox account.")
            return _approve(sandbox, consent, account)
        accounts = list(sandbox.accounts.values()) or [sandbox.default_account()]
        txn = secrets.token_urlsafe(24)
        now = time.monotonic()
        for key in [k for k, c in sandbox.consents.items() if c.expires_at <= now]:
            del sandbox.consents[key]
        sandbox.consents[txn] = consent
    return _consent_page(client, consent, txn, accounts, args.get("login_hint"))


def _consent_decision(sandbox: Sandbox, request: Request) -> Reply:
    form = request.form
    with sandbox.lock:
        consent = sandbox.consents.pop(form.get("txn", ""), None)
        if consent is None or consent.expires_at <= time.monotonic():
            return _html_error(
                HTTPStatus.BAD_REQUEST, "This authorization request expired; start again."
            )
        if form.get("decision") != "allow":
            return _redirect(
                consent.redirect_uri,
                error="access_denied",
                error_description="The resource owner or authorization server denied the request.",
                state=consent.state,
            )
        account = sandbox.find_account(form.get("account", ""))
        if account is None:
            return _html_error(HTTPStatus.BAD_REQUEST, "Choose a sandbox account.")
        return _approve(sandbox, consent, account)


def _approve(sandbox: Sandbox, consent: ConsentRequest, account: Account) -> Reply:
    code = secrets.token_urlsafe(32)
    now = sandbox.now()
    for key in [k for k, c in sandbox.codes.items() if c.used or c.expires_at <= now]:
        del sandbox.codes[key]
    sandbox.codes[code] = AuthorizationCode(
        client_id=consent.client_id,
        redirect_uri=consent.redirect_uri,
        scopes=consent.scopes,
        sub=account.sub,
        expires_at=now + sandbox.options.authorization_code_lifetime,
        code_challenge=consent.code_challenge,
    )
    return _redirect(consent.redirect_uri, code=code, state=consent.state)


def split_scopes(raw: str) -> list[str]:
    scopes: list[str] = []
    for scope in raw.replace("+", " ").split():
        if scope not in scopes:
            scopes.append(scope)
    return scopes


def _redirect(uri: str, **params: str) -> Reply:
    separator = "&" if "?" in uri else "?"
    location = f"{uri}{separator}{urlencode(params)}"
    return Reply(HTTPStatus.FOUND, b"", None, [("Location", location)])


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 34rem; margin: 3rem auto; padding: 0 1rem;
       color: #1d2733; }}
h1 {{ font-size: 1.4rem; }}
.note {{ color: #5a6572; font-size: .85rem; }}
button {{ font-size: 1rem; padding: .5rem 1.4rem; margin-right: .5rem; cursor: pointer; }}
#allow {{ background: #1856ed; color: #fff; border: 0; border-radius: 4px; }}
select {{ font-size: 1rem; padding: .3rem; }}
</style>
</head>
<body>
{body}
<p class="note">Local Constant Contact sandbox: no real account or data is involved.</p>
</body>
</html>
"""


def _html(status: int, title: str, body: str) -> Reply:
    page = _PAGE.format(title=html.escape(title), body=body)
    return Reply(
        status,
        page.encode(),
        "text/html; charset=utf-8",
        [("Cache-Control", "no-store"), ("X-Frame-Options", "DENY")],
    )


def _html_error(status: int, message: str) -> Reply:
    body = f'<h1>Authorization error</h1>\n<p id="error">{html.escape(message)}</p>'
    return _html(status, "Constant Contact sandbox: authorization error", body)


def _consent_page(
    client: Client, consent: ConsentRequest, txn: str, accounts: list[Account], hint: str | None
) -> Reply:
    esc = html.escape
    scopes = "".join(f"<li>{esc(scope)}</li>" for scope in consent.scopes)
    if len(accounts) == 1:
        chooser = (
            f'<p>Signed in as <strong id="account-email">{esc(accounts[0].email)}</strong></p>\n'
            f'<input type="hidden" id="account" name="account" value="{esc(accounts[0].sub)}">'
        )
    else:
        folded = (hint or "").casefold()
        options = "".join(
            f'<option value="{esc(a.sub)}"'
            f"{' selected' if folded in (a.sub.casefold(), a.email.casefold()) else ''}>"
            f"{esc(a.email)} ({esc(a.name)})</option>"
            for a in accounts
        )
        chooser = (
            '<p><label for="account">Constant Contact account</label><br>\n'
            f'<select id="account" name="account">{options}</select></p>'
        )
    body = f"""<h1>Allow <span id="client-name">{esc(client.name)}</span> to access your \
Constant Contact account?</h1>
<p>It asks for:</p>
<ul id="scopes">{scopes}</ul>
<form id="consent" method="post" action="{AUTHORIZE_PATH}">
<input type="hidden" name="txn" value="{esc(txn)}">
{chooser}
<p>
<button id="allow" type="submit" name="decision" value="allow">Allow</button>
<button id="deny" type="submit" name="decision" value="deny">Deny</button>
</p>
</form>"""
    return _html(HTTPStatus.OK, f"Authorize {client.name}", body)


# --- token -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PresentedClient:
    """The client credentials a token request carries (HTTP Basic wins over the body)."""

    client_id: str
    secret: str | None
    malformed: bool = False


def token_params(request: Request) -> dict[str, str]:
    """Parameters from the query string, overridden by the form body: CC's own examples put
    them in the query string of the POST.
    Reference: https://developer.constantcontact.com/api_guide/server_flow.html"""
    params = {key: value for key, value in request.args.items()}
    params.update(request.form.items())
    return params


def presented_client(request: Request, params: dict[str, str]) -> PresentedClient:
    header = request.headers.get("Authorization", "")
    if header[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
            client_id, _, secret = decoded.partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return PresentedClient(
                client_id=params.get("client_id", ""), secret=None, malformed=True
            )
        return PresentedClient(client_id=client_id, secret=secret)
    return PresentedClient(
        client_id=params.get("client_id", ""), secret=params.get("client_secret")
    )


def token_throttled(per_second: int) -> Reply:
    """The token endpoint's 429; CC documents no body, this mirrors its OAuth error form."""
    return oauth_error(
        HTTPStatus.TOO_MANY_REQUESTS, "too_many_requests", TOKEN_THROTTLED.format(n=per_second)
    )


def token_unavailable() -> Reply:
    return oauth_error(
        HTTPStatus.SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "The authorization server is temporarily unavailable.",
    )


def invalid_grant(description: str) -> Reply:
    return oauth_error(HTTPStatus.BAD_REQUEST, "invalid_grant", description)


def token(
    sandbox: Sandbox, request: Request, params: dict[str, str], presented: PresentedClient
) -> Reply:
    """Authenticate the client and run the grant (limits and faults are applied before)."""
    if request.method != "POST":
        return oauth_error(
            HTTPStatus.METHOD_NOT_ALLOWED, "invalid_request", "The token endpoint takes POST."
        )
    client = sandbox.clients.get(presented.client_id)
    if presented.malformed or client is None or not _secret_ok(client, presented.secret):
        return oauth_error(
            HTTPStatus.UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed. Either the client or the client credentials are "
            "invalid.",
            headers=[("WWW-Authenticate", 'Basic realm="Constant Contact sandbox"')],
        )
    grant_type = params.get("grant_type", "")
    with sandbox.lock:
        if grant_type == "authorization_code":
            return _code_grant(sandbox, client, params)
        if grant_type == "refresh_token":
            return _refresh_grant(sandbox, client, params)
    if not grant_type:
        return oauth_error(
            HTTPStatus.BAD_REQUEST, "invalid_request", "The 'grant_type' parameter is required."
        )
    return oauth_error(
        HTTPStatus.BAD_REQUEST,
        "unsupported_grant_type",
        f"The grant_type {grant_type!r} is not supported.",
    )


def _secret_ok(client: Client, secret: str | None) -> bool:
    if client.is_public:
        return not secret
    return secret is not None and hmac.compare_digest(secret, client.client_secret)


def _token_reply(body: dict[str, Any]) -> Reply:
    reply = json_reply(body)
    reply.headers += [("Cache-Control", "no-store"), ("Pragma", "no-cache")]
    return reply


def _code_grant(sandbox: Sandbox, client: Client, params: dict[str, str]) -> Reply:
    code = params.get("code", "")
    if not code:
        return oauth_error(
            HTTPStatus.BAD_REQUEST, "invalid_request", "The 'code' parameter is required."
        )
    record = sandbox.codes.get(code)
    if (
        record is None
        or record.used
        or record.expires_at <= sandbox.now()
        or record.client_id != client.client_id
    ):
        return invalid_grant(INVALID_CODE)
    if params.get("redirect_uri", "") != record.redirect_uri:
        return invalid_grant(REDIRECT_MISMATCH)
    verifier = params.get("code_verifier")
    if record.code_challenge is not None:
        if not verifier:
            return invalid_grant(
                "PKCE code verifier is required when the parameter 'code_challenge' was sent "
                "in the authorization request."
            )
        digest = hashlib.sha256(verifier.encode()).digest()
        expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        if not hmac.compare_digest(expected, record.code_challenge):
            return invalid_grant("PKCE verification failed.")
    elif verifier:
        return invalid_grant("PKCE verification failed: no code_challenge was sent.")
    account = sandbox.accounts.get(record.sub)
    if account is None:
        return invalid_grant(INVALID_CODE)
    record.used = True
    return _token_reply(issue_tokens(sandbox, client, account, record.scopes))


def _refresh_grant(sandbox: Sandbox, client: Client, params: dict[str, str]) -> Reply:
    refresh_token = params.get("refresh_token", "")
    if not refresh_token:
        return oauth_error(
            HTTPStatus.BAD_REQUEST,
            "invalid_request",
            "The 'refresh_token' parameter is required.",
        )
    now = sandbox.now()
    grant = sandbox.refresh_grants.get(refresh_token)
    if (
        grant is None
        or grant.client_id != client.client_id
        or now - grant.last_used_at > sandbox.options.refresh_token_idle_seconds
    ):
        return invalid_grant(INVALID_REFRESH)
    account = sandbox.accounts.get(grant.sub)
    if account is None:
        return invalid_grant(INVALID_REFRESH)
    scopes = grant.scopes
    if params.get("scope"):
        requested = split_scopes(params["scope"])
        if not set(requested) <= set(grant.scopes):
            return oauth_error(
                HTTPStatus.BAD_REQUEST,
                "invalid_scope",
                "The requested scope is invalid, unknown, or malformed.",
            )
        scopes = requested
    if client.refresh_mode == "long_lived":
        # Long-lived: the same value comes back every time; use keeps it alive (CC's refresh
        # tokens die after 180 days unused).
        # Reference: https://developer.constantcontact.com/api_guide/server_flow.html
        grant.last_used_at = now
        body = _token_body(sandbox, client, account, scopes)
        body["refresh_token"] = refresh_token
        return _token_reply(body)
    # Rotating: single use; the new token carries the grant's original scopes.
    del sandbox.refresh_grants[refresh_token]
    body = _token_body(sandbox, client, account, scopes)
    body["refresh_token"] = _new_refresh_token(sandbox, client, grant.sub, grant.scopes)
    return _token_reply(body)

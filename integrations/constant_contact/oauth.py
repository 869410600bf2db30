"""CC's OAuth2 server: the authorize URL and the token endpoint (code exchange, refresh).

Every function here handles secrets; callers mark their own frames (and so these, which run
below them) with Django's ``sensitive_variables`` so error reports never show them.

Reference: https://developer.constantcontact.com/api_guide/server_flow.html
Reference: https://developer.constantcontact.com/api_guide/pkce_flow.html
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import urlencode

import requests

from integrations.constant_contact.errors import CCTransportError, OAuthError


@dataclass(frozen=True)
class TokenResponse:
    """A successful token-endpoint answer. ``repr`` shows no token."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    scopes: tuple[str, ...]
    expires_in: int | None
    token_type: str = "Bearer"


def pkce_pair() -> tuple[str, str]:
    """A fresh (code_verifier, S256 code_challenge) pair (RFC 7636 §4.1-4.2)."""
    verifier = secrets.token_urlsafe(64)  # 86 characters: within RFC 7636's 43-128
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return verifier, challenge


def authorize_url(
    *,
    endpoint: str,
    client_id: str,
    redirect_uri: str,
    scopes: list[str],
    state: str,
    code_challenge: str | None = None,
) -> str:
    """Where to send the browser to ask the user for consent."""
    params = {
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "scope": " ".join(scopes),
        "state": state,
    }
    if code_challenge:
        params |= {"code_challenge": code_challenge, "code_challenge_method": "S256"}
    return f"{endpoint}?{urlencode(params)}"


def _token_request(
    *,
    session: requests.Session,
    token_url: str,
    client_id: str,
    client_secret: str,
    form: dict[str, str],
) -> TokenResponse:
    # Confidential apps authenticate with HTTP Basic (CC's documented way); public (PKCE)
    # apps have no secret and identify themselves with client_id in the body.
    auth = None
    if client_secret:
        auth = (client_id, client_secret)
    else:
        form = {**form, "client_id": client_id}
    try:
        response = session.post(
            token_url, data=form, auth=auth, headers={"Accept": "application/json"}
        )
    except requests.Timeout:
        raise CCTransportError(
            "CC's token endpoint did not answer in time.", timeout=True
        ) from None
    except requests.RequestException as exc:
        raise CCTransportError(
            f"Could not reach CC's token endpoint: {type(exc).__name__}."
        ) from None

    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != HTTPStatus.OK or not isinstance(body, dict):
        body = body if isinstance(body, dict) else {}
        raise OAuthError(
            status=response.status_code,
            error=str(
                body.get("error")
                or body.get("errorCode")
                or HTTPStatus(response.status_code).phrase
            ),
            description=str(body.get("error_description") or body.get("errorSummary") or "")[:300],
        )
    if not body.get("access_token"):
        raise OAuthError(
            status=response.status_code,
            error="invalid_response",
            description="no access_token in the answer",
        )
    expires_in = body.get("expires_in")
    return TokenResponse(
        access_token=str(body["access_token"]),
        refresh_token=str(body.get("refresh_token") or ""),
        scopes=tuple(str(body.get("scope") or "").split()),
        expires_in=int(expires_in)
        if isinstance(expires_in, int | float | str) and str(expires_in).isdigit()
        else None,
        token_type=str(body.get("token_type") or "Bearer"),
    )


def token_exchange_code(
    *,
    session: requests.Session,
    token_url: str,
    client_id: str,
    client_secret: str,
    code: str,
    redirect_uri: str,
    code_verifier: str | None = None,
) -> TokenResponse:
    """Trade an authorization code (single use, 5-minute life) for tokens."""
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if code_verifier:
        form["code_verifier"] = code_verifier
    return _token_request(
        session=session,
        token_url=token_url,
        client_id=client_id,
        client_secret=client_secret,
        form=form,
    )


def token_refresh(
    *,
    session: requests.Session,
    token_url: str,
    client_id: str,
    client_secret: str,
    refresh_token: str,
) -> TokenResponse:
    """Trade a refresh token for a new pair. With rotating refresh tokens the old one is dead
    as soon as CC answers, whether or not the answer reaches us."""
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return _token_request(
        session=session,
        token_url=token_url,
        client_id=client_id,
        client_secret=client_secret,
        form=form,
    )

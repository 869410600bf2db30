"""Constant Contact access tokens: verify an RS256 JWT against CC's published signing keys.

``access_token_validate`` is the only way to trust what an access token says. It names every
expectation up front and maps each PyJWT error to one ``InvalidAccessToken.reason``:

* the signature is RS256 and nothing else — ``none``, HMAC (including HMAC keyed with our RSA
  public key) and every other algorithm are refused before any key is looked up;
* the key comes only from the configured JWKS (``CC_JWKS_URL``), chosen by the header's ``kid``;
  the ``jku``, ``x5u``, ``jwk`` and ``x5c`` headers are never read, so a token cannot point us
  at a key or a key server of its choosing;
* ``exp``, ``iat``, ``iss``, ``aud``, ``sub`` and ``cid`` must be present; ``iss`` and ``aud``
  must equal ``CC_JWT_ISSUER`` and ``CC_JWT_AUDIENCE`` exactly (read at call time);
* time claims allow ``LEEWAY_SECONDS`` of clock skew, never more than ``MAX_LEEWAY_SECONDS``;
  the expiry is the JWT's own ``exp``, never the token response's ``expires_in``.

No exception message or log record made here contains the token or any part of it.

Reference: https://developer.constantcontact.com/api_guide/server_flow.html (step 5, "Validate
the Access Token").
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from http import HTTPStatus
from types import MappingProxyType
from typing import Any, Final

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from django.core.exceptions import ImproperlyConfigured

from integrations.conf import cc_endpoints
from integrations.constant_contact.http import shared_session
from integrations.errors import PortalError

logger = logging.getLogger(__name__)

ALGORITHM: Final = "RS256"
LEEWAY_SECONDS: Final = 30
MAX_LEEWAY_SECONDS: Final = 60
REQUIRED_CLAIMS: Final = ("exp", "iat", "iss", "aud", "sub", "cid")
# CC access tokens are about 1,200 characters; anything far larger is refused before parsing.
MAX_TOKEN_LENGTH: Final = 8192

JWKS_TTL_SECONDS: Final = 300.0
JWKS_REFETCH_INTERVAL_SECONDS: Final = 60.0
# Without a pause after a failed fetch, every validation would queue behind a fresh
# connect/read timeout while CC's key server is unreachable.
JWKS_RETRY_AFTER_FAILURE_SECONDS: Final = 5.0
MIN_RSA_KEY_BITS: Final = 2048
_JWKS_TIMEOUT: Final = (3.0, 5.0)  # (connect, read) seconds


class Reason(StrEnum):
    """Why an access token was refused; stable codes for callers, logs and metrics."""

    MALFORMED = "malformed"
    ALGORITHM_NOT_ALLOWED = "algorithm_not_allowed"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_ISSUER = "wrong_issuer"
    WRONG_AUDIENCE = "wrong_audience"
    MISSING_CLAIM = "missing_claim"
    JWKS_UNAVAILABLE = "jwks_unavailable"


class InvalidAccessToken(PortalError):
    """An access token that must not be trusted, with a ``reason`` code.

    The message is written here, never copied from the token or from PyJWT, so it is safe to
    log and show: it never contains the token or any part of it.
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} [{self.reason}]"

    def __repr__(self) -> str:
        return f"InvalidAccessToken(reason={self.reason.value!r}, message={self.message!r})"


@dataclass(frozen=True)
class AccessTokenClaims:
    """What a verified CC access token says. Only ``access_token_validate`` makes these."""

    subject: str
    """``sub``: the CC user the token acts for."""
    platform_user_id: str
    """``platform_user_id``: CC's user id; ``""`` when the token does not carry it."""
    client_id: str
    """``cid``: the API key (client id) the token was issued to."""
    scopes: tuple[str, ...]
    """``scp``: granted scopes, in token order; empty when the claim is absent."""
    issued_at: datetime
    """``iat`` as an aware UTC datetime."""
    expires_at: datetime
    """``exp`` as an aware UTC datetime: the token's real expiry."""
    token_id: str
    """``jti``; ``""`` when absent."""
    raw_claims: Mapping[str, Any] = field(repr=False, compare=False)
    """Every claim as decoded, read-only."""


def access_token_validate(
    token: str, *, leeway_seconds: float = LEEWAY_SECONDS
) -> AccessTokenClaims:
    """Verify a CC access token and return its claims, or raise ``InvalidAccessToken``.

    Guarantees: returns only for an RS256 token signed by a key in the configured JWKS (picked
    by ``kid``), whose ``iss``/``aud`` equal the configured values exactly, that carries
    ``REQUIRED_CLAIMS``, and whose ``exp``/``iat``/``nbf`` hold within ``leeway_seconds``
    (at most ``MAX_LEEWAY_SECONDS``). The algorithm is checked before any key is looked up; no
    URL other than ``CC_JWKS_URL`` is ever fetched. Settings are read at call time.

    Raises ``InvalidAccessToken`` with one of the ``Reason`` codes; ``ImproperlyConfigured`` if
    the JWKS URL, issuer or audience setting is empty; ``ValueError`` for a leeway out of range.
    """
    if not 0 <= leeway_seconds <= MAX_LEEWAY_SECONDS:
        raise ValueError(f"leeway_seconds must be between 0 and {MAX_LEEWAY_SECONDS}.")
    endpoints = cc_endpoints()
    for setting, value in (
        ("CC_JWKS_URL", endpoints.jwks_url),
        ("CC_JWT_ISSUER", endpoints.jwt_issuer),
        ("CC_JWT_AUDIENCE", endpoints.jwt_audience),
    ):
        if not value:
            raise ImproperlyConfigured(f"{setting} is empty: access tokens cannot be verified.")

    try:
        header = _unverified_header(token)
        if header.get("alg") != ALGORITHM:
            raise InvalidAccessToken(
                Reason.ALGORITHM_NOT_ALLOWED,
                f"access token is not signed with {ALGORITHM}, the only algorithm accepted.",
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidAccessToken(
                Reason.UNKNOWN_KEY, "access token header names no signing key (kid)."
            )
        signing_key = jwks_cache_get(endpoints.jwks_url).signing_key(kid)
        claims = _decode(
            token,
            signing_key,
            issuer=endpoints.jwt_issuer,
            audience=endpoints.jwt_audience,
            leeway_seconds=leeway_seconds,
        )
        return _claims_from(claims)
    except InvalidAccessToken as exc:
        logger.debug("access token rejected: %s", exc)
        raise


def access_token_peek_expiry(token: str) -> datetime | None:
    """UNVERIFIED: the ``exp`` a token claims, as an aware UTC datetime, or ``None``.

    The signature, issuer and audience are NOT checked, so the answer may be forged. Use it
    only to decide whether a token we stored ourselves needs refreshing — never to trust who
    the token is for or what it allows; that is ``access_token_validate``'s job. Returns
    ``None`` for anything that is not a JWT with a numeric ``exp``.
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        return None
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    return _numeric_date(claims.get("exp"))


class JwksCache:
    """CC's signing keys from one JWKS URL, shared by every thread of the process.

    Guarantees (all under one lock, so they hold across threads):

    * keys are fetched on first use and kept for ``JWKS_TTL_SECONDS``; once that has passed
      they are fetched again before use — expired keys are never used;
    * a ``kid`` that is not cached causes a refetch only if no refetch (a fetch after the
      first successful one, whatever caused it) happened in the last
      ``JWKS_REFETCH_INTERVAL_SECONDS``; so after the first load, and while the URL answers,
      the URL is fetched at most once a minute however many unknown kids arrive, and a key
      newly published by CC is picked up by one refetch;
    * after a failed fetch no new attempt is made for ``JWKS_RETRY_AFTER_FAILURE_SECONDS``;
      every failure surfaces as ``InvalidAccessToken(reason="jwks_unavailable")``.

    ``fetch_count`` counts HTTP attempts (successful or not). ``clock`` is a monotonic clock
    in seconds, replaceable so tests can move time.
    """

    def __init__(self, url: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.clock = clock
        self.fetch_count = 0
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._last_refetch_at: float | None = None
        self._failed_at: float | None = None

    def signing_key(self, kid: str) -> jwt.PyJWK:
        """The RS256 public key published under ``kid``.

        Raises ``InvalidAccessToken`` with ``unknown_key`` or ``jwks_unavailable``.
        """
        with self._lock:
            now = self.clock()
            fetched_now = False
            if self._fetched_at is None or now - self._fetched_at >= JWKS_TTL_SECONDS:
                self._fetch(now)
                fetched_now = True
            key = self._keys.get(kid)
            if key is None and not fetched_now and self._refetch_allowed(now):
                logger.info("JWKS %s has no key for a token's kid; refetching.", self.url)
                self._fetch(now)
                key = self._keys.get(kid)
            if key is None:
                raise InvalidAccessToken(
                    Reason.UNKNOWN_KEY,
                    f"access token is signed with a key that {self.url} does not publish.",
                )
            return key

    def _refetch_allowed(self, now: float) -> bool:
        return (
            self._last_refetch_at is None
            or now - self._last_refetch_at >= JWKS_REFETCH_INTERVAL_SECONDS
        )

    def _fetch(self, now: float) -> None:
        if self._failed_at is not None and now - self._failed_at < JWKS_RETRY_AFTER_FAILURE_SECONDS:
            raise InvalidAccessToken(
                Reason.JWKS_UNAVAILABLE,
                f"signing keys unavailable: fetching {self.url} failed "
                f"{now - self._failed_at:.0f} s ago; next attempt after "
                f"{JWKS_RETRY_AFTER_FAILURE_SECONDS:.0f} s.",
            )
        if self._fetched_at is not None:
            self._last_refetch_at = now
        self.fetch_count += 1
        try:
            keys = _jwks_download(self.url)
        except InvalidAccessToken as exc:
            self._failed_at = now
            logger.warning("%s", exc)
            raise
        self._keys = keys
        self._fetched_at = now
        self._failed_at = None
        logger.info("JWKS %s loaded: %d RS256 key(s).", self.url, len(keys))


_caches: dict[str, JwksCache] = {}
_caches_lock = threading.Lock()


def jwks_cache_get(url: str) -> JwksCache:
    """The process-wide cache for ``url``, created on first use."""
    with _caches_lock:
        cache = _caches.get(url)
        if cache is None:
            cache = _caches[url] = JwksCache(url)
        return cache


def jwks_cache_clear() -> None:
    """Forget every cached key set and its counters (for tests)."""
    with _caches_lock:
        _caches.clear()


def _jwks_download(url: str) -> dict[str, jwt.PyJWK]:
    def unavailable(problem: str) -> InvalidAccessToken:
        return InvalidAccessToken(
            Reason.JWKS_UNAVAILABLE, f"signing keys unavailable: {url} {problem}."
        )

    try:
        # The configured URL is the only trusted source; a redirect is treated as a fault.
        response = shared_session(
            connect_timeout=_JWKS_TIMEOUT[0], read_timeout=_JWKS_TIMEOUT[1]
        ).get(url, allow_redirects=False, headers={"Accept": "application/json"})
    except requests.RequestException as exc:
        raise unavailable(f"could not be fetched ({type(exc).__name__})") from exc
    if response.status_code != HTTPStatus.OK:
        raise unavailable(f"answered HTTP {response.status_code}")
    try:
        document = response.json()
    except ValueError:
        raise unavailable("did not return JSON") from None
    keys = _jwks_parse(document)
    if not keys:
        raise unavailable(f"published no usable {ALGORITHM} signing key")
    return keys


def _jwks_parse(document: object) -> dict[str, jwt.PyJWK]:
    """The RS256 public signing keys of a JWKS document, by kid; anything else is skipped."""
    entries = document.get("keys") if isinstance(document, dict) else None
    keys: dict[str, jwt.PyJWK] = {}
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid")
        if (
            not isinstance(kid, str)
            or not kid
            or kid in keys
            or entry.get("kty") != "RSA"
            or entry.get("use", "sig") != "sig"
            or entry.get("alg", ALGORITHM) != ALGORITHM
        ):
            continue
        try:
            jwk = jwt.PyJWK(entry, algorithm=ALGORITHM)
        except jwt.PyJWTError:
            continue
        # A JWKS entry carrying private parameters, or a short modulus, is not a key to trust.
        if isinstance(jwk.key, RSAPublicKey) and jwk.key.key_size >= MIN_RSA_KEY_BITS:
            keys[kid] = jwk
    return keys


def _unverified_header(token: object) -> dict[str, Any]:
    if not isinstance(token, str) or not token:
        raise InvalidAccessToken(Reason.MALFORMED, "access token is empty or not a string.")
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidAccessToken(
            Reason.MALFORMED, f"access token is longer than {MAX_TOKEN_LENGTH} characters."
        )
    try:
        return jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidAccessToken(
            Reason.MALFORMED, "access token is not a well-formed JWT."
        ) from None


# Most specific first: several of these subclass DecodeError or InvalidTokenError.
_LIBRARY_ERRORS: Final[tuple[tuple[type[jwt.PyJWTError], Reason, str], ...]] = (
    (jwt.ExpiredSignatureError, Reason.EXPIRED, "access token has expired."),
    (jwt.ImmatureSignatureError, Reason.NOT_YET_VALID, "access token is not valid yet."),
    (jwt.InvalidSignatureError, Reason.BAD_SIGNATURE, "access token signature does not verify."),
    (jwt.InvalidAlgorithmError, Reason.ALGORITHM_NOT_ALLOWED, "access token algorithm refused."),
    (jwt.InvalidIssuerError, Reason.WRONG_ISSUER, "access token was issued by someone else."),
    (jwt.InvalidAudienceError, Reason.WRONG_AUDIENCE, "access token is for another audience."),
    (jwt.PyJWTError, Reason.MALFORMED, "access token claims are malformed."),
)


def _decode(
    token: str, key: jwt.PyJWK, *, issuer: str, audience: str, leeway_seconds: float
) -> dict[str, Any]:
    try:
        return jwt.decode(
            token,
            key=key,
            algorithms=[ALGORITHM],
            issuer=issuer,
            audience=audience,
            leeway=leeway_seconds,
            # strict_aud: the audience must be exactly CC's API, not a list that mentions it.
            options={"require": list(REQUIRED_CLAIMS), "strict_aud": True},
        )
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidAccessToken(
            Reason.MISSING_CLAIM, f"access token lacks the required claim {exc.claim!r}."
        ) from None
    except jwt.PyJWTError as exc:
        reason, message = next(
            (reason, message)
            for error_type, reason, message in _LIBRARY_ERRORS
            if isinstance(exc, error_type)
        )
        if reason is Reason.WRONG_ISSUER:
            message = f"access token issuer is not {issuer}."
        elif reason is Reason.WRONG_AUDIENCE:
            message = f"access token audience is not exactly {audience}."
        # PyJWT's own messages can quote decoded token content, so they are dropped here.
        raise InvalidAccessToken(reason, message) from None


def _claims_from(claims: dict[str, Any]) -> AccessTokenClaims:
    issued_at = _numeric_date(claims["iat"])
    expires_at = _numeric_date(claims["exp"])
    if issued_at is None or expires_at is None:
        raise InvalidAccessToken(
            Reason.MALFORMED, "access token iat/exp are not NumericDate values."
        )
    return AccessTokenClaims(
        subject=_non_empty_string(claims, "sub"),
        platform_user_id=_platform_user_id(claims.get("platform_user_id")),
        client_id=_non_empty_string(claims, "cid"),
        scopes=_scopes(claims.get("scp")),
        issued_at=issued_at,
        expires_at=expires_at,
        token_id=claims.get("jti") or "",
        raw_claims=MappingProxyType(claims),
    )


def _non_empty_string(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidAccessToken(
            Reason.MALFORMED, f"access token claim {name!r} is not a non-empty string."
        )
    return value


def _platform_user_id(value: object) -> str:
    if value is None:
        return ""
    # The claim is undocumented; accept a numeric id as well as a string one.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return value
    raise InvalidAccessToken(
        Reason.MALFORMED, "access token claim 'platform_user_id' is not a string."
    )


def _scopes(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    # CC (Okta) sends a JSON array; a space-separated string is the OAuth form, accepted too.
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list) and all(isinstance(scope, str) for scope in value):
        return tuple(value)
    raise InvalidAccessToken(
        Reason.MALFORMED, "access token claim 'scp' is neither a list nor a string of scopes."
    )


def _numeric_date(value: object) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value):
        return None
    try:
        return datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None

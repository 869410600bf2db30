from __future__ import annotations

import logging
import secrets
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http import HTTPStatus

import jwt
import pytest
from django.core.exceptions import ImproperlyConfigured

from integrations.services.jwt import (
    JWKS_REFETCH_INTERVAL_SECONDS,
    JWKS_RETRY_AFTER_FAILURE_SECONDS,
    JWKS_TTL_SECONDS,
    LEEWAY_SECONDS,
    REQUIRED_CLAIMS,
    AccessTokenClaims,
    InvalidAccessToken,
    access_token_peek_expiry,
    access_token_validate,
    jwks_cache_clear,
    jwks_cache_get,
)
from tests.integrations.services.jwt_support import (
    AUDIENCE,
    ISSUER,
    FakeClock,
    JwksServer,
    RsaKey,
    closed_port_url,
    es256_token,
    forge,
    forge_hs256,
    good_claims,
    jwks_server,
)


@pytest.fixture(scope="module")
def signing_key() -> RsaKey:
    return RsaKey.generate("cc-2024-q4")


@pytest.fixture(scope="module")
def impostor_key() -> RsaKey:
    """A different RSA key that claims CC's kid."""
    return RsaKey.generate("cc-2024-q4")


@pytest.fixture(scope="module")
def next_key() -> RsaKey:
    return RsaKey.generate("cc-2025-q1")


@pytest.fixture(autouse=True)
def _fresh_jwks_cache():
    jwks_cache_clear()
    yield
    jwks_cache_clear()


@pytest.fixture
def cc(settings, signing_key) -> JwksServer:
    """CC's JWKS, served over HTTP and configured as ``CC_JWKS_URL``."""
    with jwks_server(signing_key) as server:
        settings.CC_JWKS_URL = server.url
        settings.CC_JWT_ISSUER = ISSUER
        settings.CC_JWT_AUDIENCE = AUDIENCE
        yield server


@pytest.fixture
def clock(cc) -> FakeClock:
    """Drives the JWKS cache's monotonic clock; token times still use the wall clock."""
    fake = FakeClock()
    jwks_cache_get(cc.url).clock = fake
    return fake


def rejection(token: object) -> InvalidAccessToken:
    with pytest.raises(InvalidAccessToken) as info:
        access_token_validate(token)  # type: ignore[arg-type]
    return info.value


# --- accepted tokens ---------------------------------------------------------------------------


def test_valid_token_is_accepted_and_its_claims_are_mapped(cc, signing_key):
    claims = good_claims()
    result = access_token_validate(signing_key.sign(claims))

    assert isinstance(result, AccessTokenClaims)
    assert result.subject == "owner@example.com"
    assert result.platform_user_id == claims["platform_user_id"]
    assert result.client_id == claims["cid"]
    assert result.scopes == ("contact_data", "offline_access")
    assert result.issued_at == datetime.fromtimestamp(claims["iat"], tz=UTC)
    assert result.expires_at == datetime.fromtimestamp(claims["exp"], tz=UTC)
    assert result.expires_at.tzinfo is UTC
    assert result.token_id == "AT.test-token-id"
    assert dict(result.raw_claims) == claims
    with pytest.raises(TypeError):
        result.raw_claims["sub"] = "someone-else"  # type: ignore[index]


def test_scp_as_a_space_separated_string_is_accepted(cc, signing_key):
    token = signing_key.sign(good_claims(scp="contact_data  account_read"))

    assert access_token_validate(token).scopes == ("contact_data", "account_read")


def test_optional_claims_default_to_empty(cc, signing_key):
    token = signing_key.sign(good_claims(platform_user_id=None, jti=None, scp=None))

    result = access_token_validate(token)

    assert (result.platform_user_id, result.token_id, result.scopes) == ("", "", ())


def test_expiry_comes_from_the_jwt_not_from_a_24_hour_assumption(cc, signing_key):
    now = int(time.time())
    token = signing_key.sign(good_claims(iat=now, exp=now + 600))

    assert access_token_validate(token).expires_at == datetime.fromtimestamp(now + 600, tz=UTC)


def test_issuer_and_audience_are_read_from_settings_at_call_time(cc, signing_key, settings):
    token = signing_key.sign(good_claims(iss="https://other.test/iss", aud="https://other.test/a"))
    assert rejection(token).reason == "wrong_issuer"

    settings.CC_JWT_ISSUER = "https://other.test/iss"
    assert rejection(token).reason == "wrong_audience"

    settings.CC_JWT_AUDIENCE = "https://other.test/a"
    assert access_token_validate(token).subject == "owner@example.com"


@pytest.mark.parametrize("setting", ["CC_JWKS_URL", "CC_JWT_ISSUER", "CC_JWT_AUDIENCE"])
def test_empty_setting_is_a_configuration_error_not_a_token_error(
    cc, signing_key, settings, setting
):
    setattr(settings, setting, "")

    with pytest.raises(ImproperlyConfigured, match=setting):
        access_token_validate(signing_key.sign(good_claims()))


# --- algorithm confusion -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(
            lambda key: jwt.encode(good_claims(), None, algorithm="none", headers={"kid": key.kid}),
            id="pyjwt-none",
        ),
        pytest.param(lambda key: forge({"alg": "None", "kid": key.kid}, good_claims()), id="None"),
        pytest.param(lambda key: forge({"alg": "NONE", "kid": key.kid}, good_claims()), id="NONE"),
        pytest.param(lambda key: forge({"kid": key.kid}, good_claims()), id="no-alg"),
        pytest.param(
            lambda key: forge({"alg": "none", "kid": key.kid}, good_claims(), b"sig"),
            id="none-with-signature",
        ),
    ],
)
def test_unsigned_token_is_rejected_before_any_key_is_fetched(cc, signing_key, make_token):
    error = rejection(make_token(signing_key))

    assert error.reason == "algorithm_not_allowed"
    assert cc.request_count == 0


@pytest.mark.parametrize("warm_cache", [False, True], ids=["cold-cache", "warm-cache"])
def test_hs256_keyed_with_the_rsa_public_key_is_rejected(cc, signing_key, warm_cache):
    if warm_cache:
        access_token_validate(signing_key.sign(good_claims()))
    requests_before = cc.request_count
    header = {"alg": "HS256", "typ": "JWT", "kid": signing_key.kid}
    token = forge_hs256(header, good_claims(), secret=signing_key.public_pem())

    error = rejection(token)

    assert error.reason == "algorithm_not_allowed"
    assert cc.request_count == requests_before


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda key: key.sign(good_claims(), algorithm="RS512"), id="RS512-right-key"),
        pytest.param(lambda key: key.sign(good_claims(), algorithm="PS256"), id="PS256-right-key"),
        pytest.param(lambda key: es256_token(good_claims(), key.kid), id="ES256"),
        pytest.param(
            lambda key: jwt.encode(
                good_claims(), secrets.token_bytes(32), algorithm="HS256", headers={"kid": key.kid}
            ),
            id="HS256-random-secret",
        ),
        pytest.param(
            lambda key: forge({"alg": "rs256", "kid": key.kid}, good_claims()), id="rs256"
        ),
    ],
)
def test_algorithms_other_than_rs256_are_rejected(cc, signing_key, make_token):
    error = rejection(make_token(signing_key))

    assert error.reason == "algorithm_not_allowed"
    assert cc.request_count == 0


# --- signature -----------------------------------------------------------------------------------


def test_rs256_signed_by_another_key_with_the_same_kid_is_rejected(cc, impostor_key):
    assert rejection(impostor_key.sign(good_claims())).reason == "bad_signature"


def test_claims_changed_after_signing_are_rejected(cc, signing_key):
    header, _, signature = signing_key.sign(good_claims()).split(".")
    _, payload, _ = forge({}, good_claims(sub="admin@example.com")).split(".")

    assert rejection(f"{header}.{payload}.{signature}").reason == "bad_signature"


# --- issuer, audience, time ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "iss", [f"{ISSUER}/", "https://evil.test/oauth2/aus-test", ISSUER.upper(), 123]
)
def test_wrong_issuer_is_rejected(cc, signing_key, iss):
    header = {"alg": "RS256", "kid": signing_key.kid}
    error = rejection(signing_key.sign_by_hand(header, good_claims(iss=iss)))

    assert error.reason == "wrong_issuer"
    assert ISSUER in error.message


@pytest.mark.parametrize(
    "aud",
    ["https://api.test/v2", [AUDIENCE, "https://other.test"], [AUDIENCE]],
    ids=["other", "list-including-ours", "list-of-ours"],
)
def test_audience_other_than_exactly_ours_is_rejected(cc, signing_key, aud):
    error = rejection(signing_key.sign(good_claims(aud=aud)))

    assert error.reason == "wrong_audience"
    assert AUDIENCE in error.message


def test_token_expired_beyond_the_leeway_is_rejected(cc, signing_key):
    now = int(time.time())
    token = signing_key.sign(good_claims(iat=now - 86400, exp=now - LEEWAY_SECONDS - 15))

    assert rejection(token).reason == "expired"


def test_token_expired_within_the_leeway_is_accepted(cc, signing_key):
    now = int(time.time())
    token = signing_key.sign(good_claims(iat=now - 86400, exp=now - LEEWAY_SECONDS + 15))

    assert access_token_validate(token).expires_at < datetime.now(UTC)


def test_leeway_can_be_narrowed_but_never_beyond_sixty_seconds(cc, signing_key):
    now = int(time.time())
    token = signing_key.sign(good_claims(iat=now - 86400, exp=now - 10))

    with pytest.raises(InvalidAccessToken) as info:
        access_token_validate(token, leeway_seconds=0)
    assert info.value.reason == "expired"
    with pytest.raises(ValueError, match="60"):
        access_token_validate(token, leeway_seconds=61)


def test_nbf_in_the_future_is_rejected(cc, signing_key):
    token = signing_key.sign(good_claims(nbf=int(time.time()) + 120))

    assert rejection(token).reason == "not_yet_valid"


def test_nbf_within_the_leeway_is_accepted(cc, signing_key):
    token = signing_key.sign(good_claims(nbf=int(time.time()) + LEEWAY_SECONDS - 15))

    assert access_token_validate(token).subject == "owner@example.com"


def test_iat_in_the_future_is_rejected(cc, signing_key):
    token = signing_key.sign(good_claims(iat=int(time.time()) + 120))

    assert rejection(token).reason == "not_yet_valid"


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_token_missing_a_required_claim_is_rejected(cc, signing_key, claim):
    error = rejection(signing_key.sign(good_claims(**{claim: None})))

    assert error.reason == "missing_claim"
    assert repr(claim) in error.message


@pytest.mark.parametrize(
    "overrides",
    [
        {"exp": "9999999999"},
        {"iat": "1700000000"},
        {"exp": 1e300},
        {"nbf": "soon"},
        {"sub": ""},
        {"sub": 42},
        {"cid": ""},
        {"jti": 7},
        {"scp": 7},
        {"scp": ["contact_data", 7]},
        {"platform_user_id": {"id": 1}},
    ],
    ids=repr,
)
def test_claims_of_the_wrong_type_are_malformed(cc, signing_key, overrides):
    assert rejection(signing_key.sign(good_claims(**overrides))).reason == "malformed"


# --- where keys come from ------------------------------------------------------------------------


@pytest.fixture
def foreign(impostor_key):
    """An attacker's JWKS server publishing a key that claims CC's kid, and one of its own."""
    attacker_own = RsaKey(kid="attacker", private_key=impostor_key.private_key)
    with jwks_server(impostor_key, attacker_own) as server:
        yield server


@pytest.mark.parametrize("pointer", ["jku", "x5u"])
@pytest.mark.parametrize(
    ("kid", "reason"), [("attacker", "unknown_key"), ("cc-2024-q4", "bad_signature")]
)
def test_key_url_headers_are_never_followed(cc, foreign, impostor_key, pointer, kid, reason):
    token = impostor_key.sign(good_claims(), kid=kid, **{pointer: foreign.url})

    assert rejection(token).reason == reason
    assert foreign.request_count == 0
    assert cc.request_count >= 1


@pytest.mark.parametrize("kid", ["attacker", "cc-2024-q4"])
def test_embedded_key_headers_are_ignored(cc, impostor_key, kid):
    public_jwk = impostor_key.public_jwk(kid=kid)
    token = impostor_key.sign(good_claims(), kid=kid, jwk=public_jwk, x5c=["MIIBIjAN"])

    assert rejection(token).reason in {"unknown_key", "bad_signature"}


def test_unknown_kid_is_rejected(cc, next_key):
    error = rejection(next_key.sign(good_claims()))

    assert error.reason == "unknown_key"
    assert cc.url in error.message


@pytest.mark.parametrize("kid", [None, "", 5])
def test_token_without_a_usable_kid_is_rejected(cc, signing_key, kid):
    header = {"alg": "RS256"} if kid is None else {"alg": "RS256", "kid": kid}
    token = forge(header, good_claims(), b"x" * 256)

    assert rejection(token).reason in {"unknown_key", "malformed"}
    assert cc.request_count == 0


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not a token",
        "a.b.c",
        "a.b",
        "....",
        "eyJhbGciOiJSUzI1NiJ9",
        "e30.e30.",
        "W10.e30.",
        "!!!!.e30.",
        "x" * 50_000,
        None,
        b"eyJhbGciOiJSUzI1NiJ9.e30.",
        12345,
    ],
    ids=lambda value: repr(value)[:24],
)
def test_garbage_is_rejected_as_malformed(cc, token):
    assert rejection(token).reason in {"malformed", "algorithm_not_allowed"}
    assert cc.request_count == 0


def test_bearer_prefix_or_whitespace_is_not_stripped(cc, signing_key):
    token = signing_key.sign(good_claims())

    assert rejection(f"Bearer {token}").reason == "malformed"
    assert rejection(f" {token}\n").reason in {"malformed", "bad_signature"}


# --- JWKS availability ---------------------------------------------------------------------------


def test_unreachable_jwks_is_jwks_unavailable(settings, signing_key):
    settings.CC_JWKS_URL = closed_port_url()
    settings.CC_JWT_ISSUER, settings.CC_JWT_AUDIENCE = ISSUER, AUDIENCE

    error = rejection(signing_key.sign(good_claims()))

    assert error.reason == "jwks_unavailable"
    assert settings.CC_JWKS_URL in error.message
    assert "could not be fetched" in error.message


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (HTTPStatus.INTERNAL_SERVER_ERROR, None, "HTTP 500"),
        (HTTPStatus.FOUND, None, "HTTP 302"),
        (HTTPStatus.OK, b"<html>maintenance</html>", "did not return JSON"),
        (HTTPStatus.OK, b'{"keys": []}', "no usable RS256"),
        (HTTPStatus.OK, b'["not", "a", "jwks"]', "no usable RS256"),
    ],
    ids=["500", "redirect", "html", "empty", "not-an-object"],
)
def test_jwks_answering_badly_is_jwks_unavailable(cc, signing_key, status, body, expected):
    cc.status, cc.body = status, body

    error = rejection(signing_key.sign(good_claims()))

    assert error.reason == "jwks_unavailable"
    assert expected in error.message
    assert cc.request_count == 1


@pytest.mark.parametrize(
    "unusable",
    [
        {"alg": "RS512"},
        {"use": "enc"},
        {"kty": "EC"},
    ],
    ids=repr,
)
def test_jwks_entries_not_for_rs256_signatures_are_ignored(cc, signing_key, unusable):
    cc.keys = [signing_key.public_jwk(**unusable)]

    assert rejection(signing_key.sign(good_claims())).reason == "jwks_unavailable"


def test_jwks_keys_shorter_than_2048_bits_are_ignored(cc):
    weak = RsaKey.generate("weak", bits=1024)
    cc.publish(weak)

    token = weak.sign_by_hand({"alg": "RS256", "kid": weak.kid}, good_claims())

    assert rejection(token).reason == "jwks_unavailable"


def test_after_a_failed_fetch_retries_pause_then_recover(cc, clock, signing_key):
    token = signing_key.sign(good_claims())
    cc.status = HTTPStatus.SERVICE_UNAVAILABLE
    assert rejection(token).reason == "jwks_unavailable"
    cc.status = HTTPStatus.OK

    clock.advance(JWKS_RETRY_AFTER_FAILURE_SECONDS - 1)
    error = rejection(token)
    assert error.reason == "jwks_unavailable"
    assert "next attempt" in error.message
    assert cc.request_count == 1

    clock.advance(1)
    assert access_token_validate(token).subject == "owner@example.com"
    assert cc.request_count == 2


# --- caching, refetch limits, rotation -----------------------------------------------------------


def test_jwks_is_fetched_once_and_cached_for_five_minutes(cc, clock, signing_key):
    token = signing_key.sign(good_claims())
    for _ in range(50):
        access_token_validate(token)
    assert cc.request_count == 1

    clock.advance(JWKS_TTL_SECONDS - 1)
    access_token_validate(token)
    assert cc.request_count == 1

    clock.advance(1)
    access_token_validate(token)
    assert cc.request_count == 2
    assert jwks_cache_get(cc.url).fetch_count == 2


def test_key_removed_from_the_jwks_stops_working_once_the_cache_expires(
    cc, clock, signing_key, next_key
):
    old_token = signing_key.sign(good_claims())
    access_token_validate(old_token)
    cc.publish(next_key)

    clock.advance(JWKS_TTL_SECONDS)

    assert rejection(old_token).reason == "unknown_key"


def test_expired_cache_is_not_used_when_the_refresh_fails(cc, clock, signing_key):
    token = signing_key.sign(good_claims())
    access_token_validate(token)
    cc.status = HTTPStatus.BAD_GATEWAY

    clock.advance(JWKS_TTL_SECONDS)

    assert rejection(token).reason == "jwks_unavailable"


def test_key_rotation_is_accepted_after_exactly_one_refetch(cc, clock, signing_key, next_key):
    access_token_validate(signing_key.sign(good_claims()))
    assert cc.request_count == 1
    cc.publish(signing_key, next_key)
    clock.advance(1)

    result = access_token_validate(next_key.sign(good_claims()))

    assert result.subject == "owner@example.com"
    assert cc.request_count == 2
    assert jwks_cache_get(cc.url).fetch_count == 2
    access_token_validate(next_key.sign(good_claims()))
    access_token_validate(signing_key.sign(good_claims()))
    assert cc.request_count == 2


def _tokens_with_random_kids(key: RsaKey, count: int) -> list[str]:
    claims = good_claims()
    return [key.sign(claims, kid=secrets.token_urlsafe(12)) for _ in range(count)]


def test_unknown_kid_flood_fetches_the_jwks_at_most_once_a_minute(cc, clock, signing_key):
    flood = _tokens_with_random_kids(signing_key, 1000)
    access_token_validate(signing_key.sign(good_claims()))
    assert cc.request_count == 1

    reasons = {rejection(token).reason for token in flood}
    assert reasons == {"unknown_key"}
    assert cc.request_count == 2

    clock.advance(JWKS_REFETCH_INTERVAL_SECONDS - 1)
    for token in flood[:100]:
        rejection(token)
    assert cc.request_count == 2

    clock.advance(1)
    for token in flood[:100]:
        rejection(token)
    assert cc.request_count == 3
    assert jwks_cache_get(cc.url).fetch_count == 3


def test_unknown_kid_flood_from_many_threads_fetches_the_jwks_once(cc, clock, signing_key):
    flood = _tokens_with_random_kids(signing_key, 1000)
    access_token_validate(signing_key.sign(good_claims()))
    start = threading.Barrier(8)

    def validate_share(share: list[str]) -> set[str]:
        start.wait()
        return {rejection(token).reason for token in share}

    with ThreadPoolExecutor(max_workers=8) as pool:
        shares = [flood[i::8] for i in range(8)]
        reasons = set().union(*pool.map(validate_share, shares))

    assert reasons == {"unknown_key"}
    assert cc.request_count == 2


def test_cold_cache_is_loaded_once_by_concurrent_first_requests(cc, signing_key):
    token = signing_key.sign(good_claims())
    start = threading.Barrier(16)

    def validate() -> str:
        start.wait()
        return access_token_validate(token).subject

    with ThreadPoolExecutor(max_workers=16) as pool:
        subjects = set(pool.map(lambda _: validate(), range(16)))

    assert subjects == {"owner@example.com"}
    assert cc.request_count == 1


# --- the token never leaks -----------------------------------------------------------------------


def test_token_never_appears_in_exception_messages_or_logs(
    cc, clock, signing_key, impostor_key, next_key, caplog, settings
):
    now = int(time.time())
    bad_tokens = [
        impostor_key.sign(good_claims()),
        signing_key.sign(good_claims(iss="https://evil.test")),
        signing_key.sign(good_claims(aud="https://evil.test")),
        signing_key.sign(good_claims(iat=now - 86400, exp=now - 3600)),
        signing_key.sign(good_claims(nbf=now + 3600)),
        signing_key.sign(good_claims(cid=None)),
        signing_key.sign(good_claims(scp={"contact_data": True})),
        next_key.sign(good_claims()),
        signing_key.sign(good_claims(), algorithm="RS512"),
        forge_hs256(
            {"alg": "HS256", "kid": signing_key.kid}, good_claims(), signing_key.public_pem()
        ),
        forge({"alg": "RS256", "kid": signing_key.kid}, good_claims(), b"\xff" * 256),
        forge({"alg": "RS256", "kid": "\n\x00" + "k" * 40}, good_claims(), b"x"),
        "eyJhbGciOiJSUzI1NiIsImtpZCI6ImNjLTIwMjQtcTQifQ.bm90LWpzb24tYXQtYWxs.c2ln",
    ]
    errors: list[tuple[str, InvalidAccessToken]] = []
    with caplog.at_level(logging.DEBUG):
        for token in bad_tokens:
            errors.append((token, rejection(token)))
        settings.CC_JWKS_URL = closed_port_url()
        token = signing_key.sign(good_claims())
        errors.append((token, rejection(token)))

    assert {error.reason for _, error in errors} >= {
        "bad_signature",
        "wrong_issuer",
        "wrong_audience",
        "expired",
        "not_yet_valid",
        "missing_claim",
        "malformed",
        "unknown_key",
        "algorithm_not_allowed",
        "jwks_unavailable",
    }
    assert any(record.name == "integrations.services.jwt" for record in caplog.records)
    logged = "\n".join([record.getMessage() for record in caplog.records] + [caplog.text])
    for token, error in errors:
        shown = "\n".join(
            [str(error), repr(error), repr(error.args), "".join(traceback.format_exception(error))]
        )
        for fragment in [token, *(part for part in token.split(".") if len(part) >= 4)]:
            assert fragment not in shown
            assert fragment not in logged


# --- unverified expiry peek ----------------------------------------------------------------------


def test_peek_expiry_reads_exp_without_verifying_anything(settings, next_key):
    settings.CC_JWKS_URL = closed_port_url()
    exp = int(time.time()) - 3600
    token = next_key.sign(good_claims(iss="https://evil.test", exp=exp))

    assert access_token_peek_expiry(token) == datetime.fromtimestamp(exp, tz=UTC)
    assert jwks_cache_get(settings.CC_JWKS_URL).fetch_count == 0


def test_peek_expiry_reads_the_exp_of_an_alg_none_token():
    token = forge({"alg": "none"}, {"exp": 2_000_000_000})

    assert access_token_peek_expiry(token) == datetime(2033, 5, 18, 3, 33, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        None,
        forge({"alg": "none"}, {"sub": "x"}),
        forge({"alg": "none"}, {"exp": "2000000000"}),
        forge({"alg": "none"}, {"exp": True}),
        forge({"alg": "none"}, {"exp": 1e300}),
        "x" * 50_000,
    ],
    ids=lambda value: repr(value)[:24],
)
def test_peek_expiry_returns_none_without_a_numeric_exp(token):
    assert access_token_peek_expiry(token) is None  # type: ignore[arg-type]

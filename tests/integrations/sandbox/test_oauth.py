"""The sandbox's OAuth server over real HTTP: CC's code and PKCE flows, refresh modes, the
token endpoint's limit, and access tokens anyone can verify against the served JWKS."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
import requests
from jsonschema import Draft4Validator

from integrations.constant_contact.endpoints import JWT_AUDIENCE, JWT_ISSUER
from integrations.sandbox.control import SandboxControl, SandboxControlError
from tests.integrations.sandbox.conftest import APP, REDIRECT_URI, SECRET, Api, World, pkce_pair
from tests.integrations.sandbox.swagger import assert_api_error, assert_gateway_error

pytestmark = pytest.mark.slow

SCOPES = "contact_data offline_access"

# AccessTokenResponse in CC's official SDKs (not part of swagger.yaml).
TOKEN_RESPONSE = {
    "type": "object",
    "required": ["token_type", "expires_in", "access_token", "scope"],
    "properties": {
        "token_type": {"enum": ["Bearer"]},
        "expires_in": {"type": "integer"},
        "access_token": {"type": "string"},
        "scope": {"type": "string"},
        "refresh_token": {"type": "string", "minLength": 40, "maxLength": 50},
    },
    "additionalProperties": False,
}


def token_request(
    control: SandboxControl, *, auth: tuple[str, str] | None = (APP, SECRET), **params: str
) -> requests.Response:
    return requests.post(control.token_url, data=params, auth=auth, timeout=10)


def exchange(control: SandboxControl, code: str, **extra: str) -> requests.Response:
    return token_request(
        control, grant_type="authorization_code", code=code, redirect_uri=REDIRECT_URI, **extra
    )


def connect(control: SandboxControl, scope: str = SCOPES) -> dict:
    code = control.authorize(APP, REDIRECT_URI, scope, state="s-1")
    response = exchange(control, code)
    assert response.status_code == 200, response.text
    return response.json()


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def test_code_flow_with_basic_auth_issues_cc_shaped_tokens(world: World):
    body = connect(world.control)
    assert not list(Draft4Validator(TOKEN_RESPONSE).iter_errors(body))
    assert body["expires_in"] == 86_400
    assert body["scope"] == SCOPES
    claims = claims_of(body["access_token"])
    assert claims["iss"] == JWT_ISSUER
    assert claims["aud"] == JWT_AUDIENCE
    assert claims["exp"] - claims["iat"] == 86_400
    assert claims["cid"] == APP
    assert claims["scp"] == ["contact_data", "offline_access"]
    assert claims["sub"] == world.account.sub
    assert claims["platform_user_id"] == world.account.platform_user_id
    assert {"jti", "ver"} <= set(claims)
    assert jwt.get_unverified_header(body["access_token"])["kid"]
    assert Api(world.control, body["access_token"]).get("/v3/contact_lists").status_code == 200


def test_pkce_public_client_sends_client_id_and_verifier_without_secret(cc: SandboxControl):
    cc.register_client("public-app", redirect_uris=[REDIRECT_URI])
    verifier, challenge = pkce_pair()
    code = cc.authorize("public-app", REDIRECT_URI, SCOPES, "st", code_challenge=challenge)
    params = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}
    wrong = token_request(cc, auth=None, client_id="public-app", code_verifier="x" * 43, **params)
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_grant"
    good = token_request(cc, auth=None, client_id="public-app", code_verifier=verifier, **params)
    assert good.status_code == 200, good.text
    refreshed = token_request(
        cc,
        auth=None,
        client_id="public-app",
        grant_type="refresh_token",
        refresh_token=good.json()["refresh_token"],
    )
    assert refreshed.status_code == 200


def test_public_client_must_use_pkce(cc: SandboxControl):
    cc.register_client("public-app", redirect_uris=[REDIRECT_URI])
    with pytest.raises(SandboxControlError, match="invalid_request"):
        cc.authorize("public-app", REDIRECT_URI, SCOPES, "st")


def test_secret_via_client_secret_post_and_parameters_in_the_query_string(world: World):
    code = world.control.authorize(APP, REDIRECT_URI, SCOPES, "st")
    response = requests.post(
        world.control.token_url,
        params={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI},
        data={"client_id": APP, "client_secret": SECRET},
        timeout=10,
    )
    assert response.status_code == 200, response.text


def test_codes_are_single_use_bound_to_client_and_redirect_and_live_five_minutes(world: World):
    cc = world.control
    cc.register_client("other-app", client_secret="other", redirect_uris=[REDIRECT_URI])
    code = cc.authorize(APP, REDIRECT_URI, SCOPES, "st")
    mismatch = token_request(
        cc, grant_type="authorization_code", code=code, redirect_uri=REDIRECT_URI + "x"
    )
    assert mismatch.json()["error"] == "invalid_grant"
    stolen = token_request(
        cc,
        auth=("other-app", "other"),
        grant_type="authorization_code",
        code=code,
        redirect_uri=REDIRECT_URI,
    )
    assert stolen.json()["error"] == "invalid_grant"
    assert exchange(cc, code).status_code == 200
    reused = exchange(cc, code)
    assert (reused.status_code, reused.json()["error"]) == (400, "invalid_grant")

    late = cc.authorize(APP, REDIRECT_URI, SCOPES, "st")
    cc.advance_clock(301)
    expired = exchange(cc, late)
    assert expired.json() == {
        "error": "invalid_grant",
        "error_description": "The authorization code is invalid or has expired.",
    }


def test_consent_page_has_stable_controls_and_deny_redirects_access_denied(world: World):
    cc = world.control
    cc.create_account("second@example.com")
    page = requests.get(
        cc.authorize_url,
        params={
            "client_id": APP,
            "redirect_uri": REDIRECT_URI,
            "response_type": "code",
            "scope": SCOPES,
            "state": "st",
        },
        timeout=10,
    )
    assert page.status_code == 200
    for marker in ('id="allow"', 'id="deny"', 'name="decision"', '<select id="account"'):
        assert marker in page.text
    assert "second@example.com" in page.text
    assert cc.deny(APP, REDIRECT_URI, SCOPES, "st-9") == {
        "error": "access_denied",
        "error_description": "The resource owner or authorization server denied the request.",
        "state": "st-9",
    }
    code = cc.authorize(APP, REDIRECT_URI, SCOPES, "st", account="second@example.com")
    assert claims_of(exchange(cc, code).json()["access_token"])["sub"] != world.account.sub


def test_authorize_rejects_unknown_clients_and_unregistered_redirects(world: World):
    with pytest.raises(SandboxControlError) as unknown:
        world.control.authorize("nobody", REDIRECT_URI, SCOPES, "st")
    assert unknown.value.status == 400
    with pytest.raises(SandboxControlError) as redirect:
        world.control.authorize(APP, REDIRECT_URI + "other/", SCOPES, "st")
    assert "redirect_uri" in redirect.value.message


def test_auto_approve_redirects_without_a_page(cc: SandboxControl):
    cc.register_client("auto", client_secret="s", redirect_uris=[REDIRECT_URI], auto_approve=True)
    cc.create_account("first@example.com")
    second = cc.create_account("second@example.com")
    response = requests.get(
        cc.authorize_url,
        params={
            "client_id": "auto",
            "redirect_uri": REDIRECT_URI,
            "response_type": "code",
            "scope": SCOPES,
            "state": "st",
            "login_hint": "second@example.com",
        },
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 302
    assert response.headers["Location"].startswith(REDIRECT_URI + "?code=")
    code = cc.authorize("auto", REDIRECT_URI, SCOPES, "st", account=second)
    token = token_request(
        cc,
        auth=("auto", "s"),
        grant_type="authorization_code",
        code=code,
        redirect_uri=REDIRECT_URI,
    )
    assert claims_of(token.json()["access_token"])["sub"] == second.sub


def test_rotating_refresh_tokens_are_single_use(world: World):
    cc = world.control
    first = connect(cc)["refresh_token"]
    refreshed = token_request(cc, grant_type="refresh_token", refresh_token=first)
    assert refreshed.status_code == 200
    second = refreshed.json()["refresh_token"]
    assert second != first
    reuse = token_request(cc, grant_type="refresh_token", refresh_token=first)
    assert reuse.status_code == 400
    assert reuse.json() == {
        "error": "invalid_grant",
        "error_description": "The refresh token is invalid or expired.",
    }
    assert token_request(cc, grant_type="refresh_token", refresh_token=second).status_code == 200
    assert cc.stats(APP).invalid_grant == 1


def test_long_lived_refresh_token_comes_back_unchanged(cc: SandboxControl):
    cc.register_client(
        APP, client_secret=SECRET, redirect_uris=[REDIRECT_URI], refresh_mode="long_lived"
    )
    refresh_token = connect(cc)["refresh_token"]
    for _ in range(3):
        response = token_request(cc, grant_type="refresh_token", refresh_token=refresh_token)
        assert response.status_code == 200
        assert response.json()["refresh_token"] == refresh_token


def test_refresh_tokens_die_after_180_idle_days(cc: SandboxControl):
    cc.register_client(
        APP, client_secret=SECRET, redirect_uris=[REDIRECT_URI], refresh_mode="long_lived"
    )
    refresh_token = connect(cc)["refresh_token"]
    cc.advance_clock(179 * 86_400)
    assert token_request(cc, grant_type="refresh_token", refresh_token=refresh_token).ok
    cc.advance_clock(179 * 86_400)  # used 179 days ago: still alive
    assert token_request(cc, grant_type="refresh_token", refresh_token=refresh_token).ok
    cc.advance_clock(180 * 86_400 + 1)
    dead = token_request(cc, grant_type="refresh_token", refresh_token=refresh_token)
    assert dead.json()["error"] == "invalid_grant"


def test_no_refresh_token_without_offline_access(world: World):
    body = connect(world.control, scope="contact_data")
    assert "refresh_token" not in body
    assert body["scope"] == "contact_data"


def test_standard_oauth_errors(world: World):
    cc = world.control
    bad_secret = token_request(cc, auth=(APP, "wrong"), grant_type="refresh_token")
    assert (bad_secret.status_code, bad_secret.json()["error"]) == (401, "invalid_client")
    unknown = token_request(cc, auth=("nobody", "x"), grant_type="refresh_token")
    assert unknown.json()["error"] == "invalid_client"
    grant = token_request(cc, grant_type="password")
    assert (grant.status_code, grant.json()["error"]) == (400, "unsupported_grant_type")
    missing = token_request(cc, grant_type="refresh_token")
    assert (missing.status_code, missing.json()["error"]) == (400, "invalid_request")
    no_grant = token_request(cc)
    assert no_grant.json()["error"] == "invalid_request"
    assert cc.stats(APP).token_errors == {
        "invalid_client": 1,
        "unsupported_grant_type": 1,
        "invalid_request": 2,
    }


def test_token_endpoint_allows_one_request_per_second_per_client(world: World):
    cc = world.control
    cc.set_options(token_requests_per_second=1)
    cc.register_client("other-app", client_secret="other", redirect_uris=[REDIRECT_URI])
    first = token_request(cc, grant_type="refresh_token", refresh_token="nope")
    second = token_request(cc, grant_type="refresh_token", refresh_token="nope")
    other = token_request(
        cc, auth=("other-app", "other"), grant_type="refresh_token", refresh_token="nope"
    )
    assert first.json()["error"] == "invalid_grant"
    assert second.status_code == 429
    assert second.json()["error"] == "too_many_requests"
    assert other.json()["error"] == "invalid_grant"  # the limit is per client_id
    time.sleep(1.05)
    assert token_request(cc, grant_type="refresh_token", refresh_token="x").status_code == 400
    stats = cc.stats(APP)
    assert (stats.token_requests, stats.token_429, stats.token_throttled) == (3, 1, 1)


def test_access_token_verifies_with_pyjwt_against_the_served_jwks(world: World):
    token = connect(world.control)["access_token"]
    signing_key = jwt.PyJWKClient(world.control.jwks_url).get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        signing_key.key,
        algorithms=["RS256"],
        audience=JWT_AUDIENCE,
        issuer=JWT_ISSUER,
        options={"require": ["exp", "iat", "iss", "aud", "sub"]},
    )
    assert claims["cid"] == APP


def test_key_rotation_keeps_old_tokens_verifiable_until_the_old_key_retires(world: World):
    cc = world.control
    old_token = connect(cc)["access_token"]
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    new_kid = cc.rotate_keys(retain_seconds=3_600)
    new_token = connect(cc)["access_token"]
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid != old_kid
    jwks = jwt.PyJWKClient(cc.jwks_url)
    for token in (old_token, new_token):
        key = jwks.get_signing_key_from_jwt(token).key
        jwt.decode(token, key, algorithms=["RS256"], audience=JWT_AUDIENCE, issuer=JWT_ISSUER)
        assert Api(cc, token).get("/v3/contact_lists").status_code == 200
    cc.advance_clock(3_601)
    published = [key["kid"] for key in requests.get(cc.jwks_url, timeout=10).json()["keys"]]
    assert published == [new_kid]
    assert_gateway_error(Api(cc, old_token).get("/v3/contact_lists"), 401, "unauthorized")


def test_api_answers_401_for_expired_forged_or_foreign_tokens(world: World):
    cc = world.control
    cc.register_client(
        "short", client_secret="s", redirect_uris=[REDIRECT_URI], access_token_lifetime=60
    )
    short = cc.mint_tokens("short", account=world.account)
    assert short["expires_in"] == 60
    assert Api(cc, short["access_token"]).get("/v3/contacts").status_code == 200
    cc.advance_clock(61)
    assert_gateway_error(Api(cc, short["access_token"]).get("/v3/contacts"), 401, "unauthorized")

    header, payload, signature = cc.mint_tokens(APP)["access_token"].split(".")
    claims = claims_of(f"{header}.{payload}.{signature}")
    claims["cid"] = "someone-else"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    forged = f"{header}.{forged_payload.decode()}.{signature}"
    assert_gateway_error(Api(cc, forged).get("/v3/contacts"), 401, "unauthorized")
    assert_gateway_error(Api(cc, "not-a-jwt").get("/v3/contacts"), 401, "unauthorized")

    cc.set_options(audience="https://elsewhere.example/v3")
    assert_gateway_error(world.api.get("/v3/contacts"), 401, "unauthorized")


def test_api_answers_403_without_contact_data_scope(world: World):
    token = world.control.mint_tokens(APP, account=world.account, scope="account_read")
    body = assert_api_error(Api(world.control, token["access_token"]).get("/v3/contacts"), 403)
    assert body[0]["error_key"] == "forbidden"

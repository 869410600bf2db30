"""The stats are exact: every request the test sends is counted once, with its outcome."""

from __future__ import annotations

import pytest
import requests

from integrations.sandbox.control import SandboxControl
from tests.integrations.sandbox.conftest import REDIRECT_URI, Api

pytestmark = pytest.mark.slow


def test_stats_match_exactly_what_the_test_sent(cc: SandboxControl):
    cc.register_client("key", client_secret="s", redirect_uris=[REDIRECT_URI])
    account = cc.create_account("owner@example.com")
    tokens = cc.mint_tokens("key", account=account)
    api = Api(cc, tokens["access_token"])
    no_scope = Api(cc, cc.mint_tokens("key", account=account, scope="account_read")["access_token"])

    assert api.get("/v3/contact_lists").status_code == 200
    assert api.get("/v3/contacts/not-a-uuid").status_code == 404
    assert no_scope.get("/v3/contacts").status_code == 403
    cc.inject_api_fault(503)
    assert api.get("/v3/contacts").status_code == 503
    assert api.get("/v3/contact_lists").status_code == 429  # the 5th within a second
    assert api.get("/v3/contacts").status_code == 429

    def token(**data: str) -> int:
        return requests.post(cc.token_url, data=data, auth=("key", "s"), timeout=5).status_code

    assert token(grant_type="refresh_token", refresh_token=tokens["refresh_token"]) == 200
    assert token(grant_type="refresh_token", refresh_token=tokens["refresh_token"]) == 400
    cc.set_options(token_requests_per_second=1)
    assert token(grant_type="refresh_token", refresh_token="x") == 429
    assert requests.get(cc.api_base_url + "/contacts", timeout=5).status_code == 401

    stats = cc.all_stats()
    assert set(stats) == {"key", ""}
    key = stats["key"]
    assert key.requests == 6
    assert key.accepted == 4
    assert (key.status_2xx, key.status_4xx, key.status_5xx) == (1, 4, 1)
    assert (key.unauthorized, key.forbidden, key.throttled, key.quota_exceeded) == (0, 1, 2, 0)
    assert key.by_status == {"200": 1, "404": 1, "403": 1, "503": 1, "429": 2}
    assert key.by_path == {
        "GET /v3/contact_lists": {"200": 1, "429": 1},
        "GET /v3/contacts/{contact_id}": {"404": 1},
        "GET /v3/contacts": {"403": 1, "503": 1, "429": 1},
    }
    assert (key.token_requests, key.token_2xx, key.token_429, key.invalid_grant) == (3, 1, 1, 1)
    assert key.token_errors == {"invalid_grant": 1, "too_many_requests": 1}
    assert (key.max_accepted_per_second, key.max_arrivals_per_second) == (4, 6)
    assert key.today_count == 6  # throttled arrivals spend the day's budget too
    anonymous = stats[""]
    assert (anonymous.requests, anonymous.unauthorized) == (1, 1)

    cc.reset_stats()
    assert cc.stats("key").requests == 0
    assert cc.stats("key").today_count == 6  # the budget is limiter state, not a statistic

"""CC's per-key limits: 4 (or 10) requests in any sliding second on the real clock, a daily
budget on the sandbox clock's UTC day, and the stats that describe both."""

from __future__ import annotations

import datetime as dt

import pytest

from integrations.sandbox import limits
from integrations.sandbox.control import SandboxControl
from integrations.sandbox.limits import Limiter, Verdict
from tests.integrations.sandbox.conftest import REDIRECT_URI, Api
from tests.integrations.sandbox.swagger import assert_gateway_error

TODAY = dt.date(2030, 1, 1)


# --- the limiter itself, on a fake monotonic clock ---------------------------------------------
@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(limits.time, "monotonic", lambda: now[0])
    return now


def admit(limiter: Limiter, *, per_second=4, per_day=100, today=TODAY, count_rejected=True):
    return limiter.admit_api(
        "key", per_second=per_second, per_day=per_day, today=today, count_rejected=count_rejected
    )


def test_window_is_any_sliding_second_and_a_request_exactly_one_second_later_fits(clock):
    limiter = Limiter()
    for offset in (0.0, 0.25, 0.5, 0.75):
        clock[0] = 1000.0 + offset
        assert admit(limiter) is Verdict.ACCEPTED
    clock[0] = 1000.999
    assert admit(limiter) is Verdict.THROTTLED
    clock[0] = 1001.0  # the first request left the window (t-1, t]... but the 429 is in it
    assert admit(limiter) is Verdict.THROTTLED
    clock[0] = 1001.9991  # now only the two rejected arrivals remain in the window
    assert admit(limiter) is Verdict.ACCEPTED


def test_without_count_rejected_only_accepted_requests_fill_the_window(clock):
    limiter = Limiter()
    for offset in (0.0, 0.25, 0.5, 0.75):
        clock[0] = 1000.0 + offset
        admit(limiter, count_rejected=False)
    clock[0] = 1000.9
    assert admit(limiter, count_rejected=False) is Verdict.THROTTLED
    clock[0] = 1001.0
    assert admit(limiter, count_rejected=False) is Verdict.ACCEPTED


def test_daily_budget_counts_throttled_arrivals_and_rolls_over_with_the_day(clock):
    limiter = Limiter()
    verdicts = [admit(limiter, per_second=2, per_day=4) for _ in range(4)]
    assert verdicts == [Verdict.ACCEPTED, Verdict.ACCEPTED, Verdict.THROTTLED, Verdict.THROTTLED]
    clock[0] += 5  # a fresh window, but the 4 arrivals spent the day's 4 units
    assert admit(limiter, per_second=2, per_day=4) is Verdict.QUOTA_EXCEEDED
    assert limiter.snapshot("key", TODAY)["today"] == {
        "date": "2030-01-01",
        "count": 4,
        "arrivals": 5,
    }
    tomorrow = TODAY + dt.timedelta(days=1)
    assert admit(limiter, per_second=2, per_day=4, today=tomorrow) is Verdict.ACCEPTED
    figures = limiter.snapshot("key", tomorrow)
    assert figures["today"] == {"date": "2030-01-02", "count": 1, "arrivals": 1}
    assert (figures["max_accepted_per_second"], figures["max_arrivals_per_second"]) == (2, 4)


# --- over HTTP ---------------------------------------------------------------------------------
def _client(cc: SandboxControl, client_id: str, **limits_: object) -> Api:
    cc.register_client(client_id, client_secret="s", redirect_uris=[REDIRECT_URI], **limits_)
    return Api(cc, cc.mint_tokens(client_id)["access_token"])


@pytest.mark.slow
def test_five_quick_calls_on_a_standard_key_get_exactly_one_throttled_429(cc: SandboxControl):
    api = _client(cc, "standard-app")
    statuses = [api.get("/v3/contact_lists").status_code for _ in range(5)]
    assert sorted(statuses) == [200, 200, 200, 200, 429]
    assert statuses[-1] == 429
    throttled = api.get("/v3/contact_lists")  # still inside the same second
    assert_gateway_error(throttled, 429, "throttled")
    assert throttled.json() == {"error_key": "throttled", "error_message": "Too Many Requests"}
    assert "Retry-After" not in throttled.headers  # CC documents no rate-limit headers
    stats = cc.stats("standard-app")
    assert (stats.requests, stats.accepted, stats.throttled) == (6, 4, 2)
    assert (stats.max_accepted_per_second, stats.max_arrivals_per_second) == (4, 6)


@pytest.mark.slow
def test_partner_key_gets_ten_per_second(cc: SandboxControl):
    api = _client(cc, "partner-app", tier="partner")
    statuses = [api.get("/v3/contact_lists").status_code for _ in range(11)]
    assert statuses.count(200) == 10 and statuses.count(429) == 1


@pytest.mark.slow
def test_limits_are_per_key_and_shared_by_every_account_of_the_key(cc: SandboxControl):
    cc.register_client("key-a", client_secret="s", redirect_uris=[REDIRECT_URI])
    cc.register_client("key-b", client_secret="s", redirect_uris=[REDIRECT_URI])
    alice, bob = cc.create_account("alice@example.com"), cc.create_account("bob@example.com")
    apis = [Api(cc, cc.mint_tokens("key-a", account=who)["access_token"]) for who in (alice, bob)]
    other_key = Api(cc, cc.mint_tokens("key-b", account=alice)["access_token"])
    statuses = [apis[i % 2].get("/v3/contacts").status_code for i in range(5)]
    assert statuses.count(429) == 1
    assert other_key.get("/v3/contacts").status_code == 200


@pytest.mark.slow
def test_daily_cap_follows_the_sandbox_clock_and_resets_at_utc_midnight(cc: SandboxControl):
    cc.set_clock("2030-01-01T23:59:50Z")
    api = _client(cc, "daily-app", tier="custom", per_second=100, per_day=3)
    assert [api.get("/v3/contacts").status_code for _ in range(3)] == [200, 200, 200]
    assert_gateway_error(api.get("/v3/contacts"), 429, "quota_exceeded")
    assert api.get("/v3/contacts").json() == {
        "error_key": "quota_exceeded",
        "error_message": "Limit Exceeded",
    }
    cc.set_clock("2030-01-02T00:00:00.5Z")
    assert api.get("/v3/contacts").status_code == 200
    stats = cc.stats("daily-app")
    assert (stats.quota_exceeded, stats.today["date"], stats.today_count) == (2, "2030-01-02", 1)


@pytest.mark.slow
def test_tiers_set_cc_published_limits_and_per_key_overrides_win(cc: SandboxControl):
    def limits_of(**spec: object) -> tuple[int, int]:
        client = cc.register_client("app", client_secret="s", redirect_uris=[REDIRECT_URI], **spec)
        return client["per_second"], client["per_day"]

    assert limits_of() == (4, 10_000)
    assert limits_of(tier="partner") == (10, 250_000)
    assert limits_of(tier="standard", per_second=50) == (50, 10_000)
    assert limits_of(tier="custom", per_second=2, per_day=500) == (2, 500)


@pytest.mark.slow
def test_advancing_the_sandbox_clock_does_not_empty_the_per_second_window(cc: SandboxControl):
    api = _client(cc, "standard-app")
    for _ in range(4):
        assert api.get("/v3/contacts").status_code == 200
    cc.advance_clock(3_600)
    assert api.get("/v3/contacts").status_code == 429

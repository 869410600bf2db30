"""The gateway against the live sandbox: every reaction driven by a real CC-shaped answer,
and the per-key limits held by real OS processes sharing one key.

The sandbox keeps its own exact count of what arrived (``stats``); the call ledger
(``ApiCall``) must agree with it to the request.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections import Counter

import pytest
from django.core.cache import cache

from integrations.constant_contact.errors import (
    CCActivityQueueFull,
    CCHTTPError,
    CCNotFound,
    CCQuotaExceeded,
    CCServerError,
    CCTransportError,
)
from integrations.constant_contact.limits import next_utc_midnight
from integrations.models import ApiCall, CallKind, ConnectedAccount, DailyUsage, Lane
from integrations.sandbox.control import SandboxControl
from integrations.services import gateway
from integrations.services.gateway import cc_call
from integrations.services.quota import QuotaExhausted, quota_usage
from tests.fixtures.portal import CLIENT_SECRET, REDIRECT_URI, CCApp, make_cc_app
from tests.support_procs import process_pool

pytestmark = pytest.mark.django_db(transaction=True)

POLICY = {
    "CC_QUOTA_MARGIN": 0.05,
    "CC_QUOTA_MARGIN_STEP": 0.05,
    "CC_QUOTA_BACKGROUND_HORIZON": 0.3,
    "CC_QUOTA_INTERACTIVE_RESERVE": 0.05,
}


@pytest.fixture(autouse=True)
def policy(settings):
    """Pin the quota policy the assertions do arithmetic with."""
    for name, value in POLICY.items():
        setattr(settings, name, value)


@pytest.fixture(autouse=True)
def fresh_gateway(monkeypatch):
    """Short backoffs keep the retry tests quick; no activity-queue backoff leaks between tests
    (the cache table is not flushed with the models)."""
    monkeypatch.setattr(gateway, "BACKOFF_BASE", 0.05)
    cache.clear()
    yield
    cache.clear()


def custom_app(
    sandbox: SandboxControl,
    client_id: str,
    *,
    per_second: int,
    per_day: int,
    sandbox_per_second: int | None = None,
    sandbox_per_day: int | None = None,
) -> CCApp:
    """A custom-tier key the portal believes allows ``per_second``/``per_day``; CC (the
    sandbox) may be told otherwise, as when a key's tier is misconfigured."""
    app = make_cc_app(
        sandbox, client_id=client_id, tier="custom", per_second=per_second, per_day=per_day
    )
    if sandbox_per_second is not None or sandbox_per_day is not None:
        cc_limits(
            sandbox,
            client_id,
            per_second=sandbox_per_second or per_second,
            per_day=sandbox_per_day or per_day,
        )
    return app


def cc_limits(sandbox: SandboxControl, client_id: str, *, per_second: int, per_day: int) -> None:
    """Change what CC enforces for ``client_id`` (tokens and today's count survive)."""
    sandbox.register_client(
        client_id,
        redirect_uris=[REDIRECT_URI],
        client_secret=CLIENT_SECRET,
        tier="custom",
        per_second=per_second,
        per_day=per_day,
        refresh_mode="long_lived",
    )


#: Connecting reads CC's account summary (``services/oauth.account_names_refresh``): one call
#: that every connected account has made before a test's own.
CONNECT_CALLS = 1
SUMMARY = "/account/summary"


def api_calls(app: CCApp):
    """The API calls of ``app`` since its account was connected."""
    calls = ApiCall.objects.filter(api_key=app.api_key, kind=CallKind.API)
    return calls.exclude(path_template=SUMMARY).order_by("pk")


def sandbox_requests(app: CCApp) -> int:
    """What reached the sandbox for ``app`` since its account was connected."""
    stats = app.sandbox.stats(app.api_key.client_id)
    return stats.requests - sum(stats.by_path.get(f"GET /v3{SUMMARY}", {}).values())


def get_lists(account: ConnectedAccount, lane: str = Lane.INTERACTIVE):
    return cc_call(account=account, method="GET", path="/contact_lists", lane=lane)


# --- 429s -------------------------------------------------------------------------------------


def test_throttled_429_pauses_the_key_widens_its_margin_and_retries(
    cc_sandbox, transactional_db, caplog
):
    # The portal believes 20/s; CC enforces 2/s: our own accounting is wrong.
    app = custom_app(cc_sandbox, "throttled-app", per_second=20, per_day=1000, sandbox_per_second=2)
    account = app.connect()
    caplog.set_level(logging.ERROR, logger="integrations.services.gateway")

    started = time.monotonic()
    answers = [get_lists(account) for _ in range(3)]
    elapsed = time.monotonic() - started

    assert all(len(a["lists"]) == 2 for a in answers)
    stats = cc_sandbox.stats(app.api_key.client_id)
    assert stats.throttled == 1
    assert stats.status_2xx == 3 + CONNECT_CALLS
    assert elapsed >= 1.0  # the retry waited out the key's pause
    usage = quota_usage(api_key=app.api_key)
    assert usage["margin"] == pytest.approx(0.10)
    assert usage["spacing"] == pytest.approx(1.10 / 20)
    calls = list(api_calls(app))
    throttled = next(n for n, c in enumerate(calls) if c.error_key == "throttled")
    assert [(c.status_code, c.error_key, c.attempt) for c in calls[throttled:][:2]] == [
        (429, "throttled", 1),
        (200, "", 2),
    ]
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(loud) == 1
    assert "throttled-app" in loud[0].getMessage()
    assert "429 throttled" in loud[0].getMessage()


def test_quota_exceeded_stops_the_key_for_every_lane_until_midnight(cc_sandbox, transactional_db):
    # The portal believes 1,000 calls a day are left; CC has only 2 after the connect's own.
    app = custom_app(
        cc_sandbox, "quota-app", per_second=20, per_day=1000, sandbox_per_day=2 + CONNECT_CALLS
    )
    account = app.connect()
    get_lists(account)
    get_lists(account)

    with pytest.raises(CCQuotaExceeded) as refused:
        get_lists(account)
    reset = next_utc_midnight()
    assert refused.value.reset_at == reset
    assert f"resets at {reset:%Y-%m-%d %H:%M} UTC" in str(refused.value)
    assert cc_sandbox.stats(app.api_key.client_id).quota_exceeded == 1

    usage = quota_usage(api_key=app.api_key)
    assert usage["stopped_until"] is not None
    assert usage["remaining"] == usage["background_remaining"] == 0
    requests_when_stopped = sandbox_requests(app)
    for lane in (Lane.INTERACTIVE, Lane.BACKGROUND):
        with pytest.raises(QuotaExhausted) as stopped:
            get_lists(account, lane=lane)
        assert stopped.value.stopped
        assert f"resets at {reset:%Y-%m-%d %H:%M} UTC" in str(stopped.value)
    assert sandbox_requests(app) == requests_when_stopped
    assert api_calls(app).count() == requests_when_stopped


def test_activity_queue_429_backs_off_that_account_only(cc_app, connected_account):
    sandbox = cc_app.sandbox
    # One queued activity fills an account's queue; nothing starts for an hour.
    sandbox.set_options(max_queued_activities=1, activity_start_delay_seconds=3600)
    other_owner = sandbox.create_account("other@example.com")
    other_list = sandbox.seed_list(other_owner, "Other newsletter")
    other = cc_app.connect(cc_account=other_owner)

    def add_memberships(account: ConnectedAccount, list_id: str):
        return cc_call(
            account=account,
            method="POST",
            path="/activities/add_list_memberships",
            json={"source": {"all_active_contacts": True}, "list_ids": [list_id]},
        )

    newsletter = cc_app.lists[0].list_id
    add_memberships(connected_account, newsletter)
    with pytest.raises(CCActivityQueueFull):
        add_memberships(connected_account, newsletter)
    assert sandbox.stats(cc_app.api_key.client_id).by_status.get("429") == 1

    before = sandbox_requests(cc_app)
    with pytest.raises(CCActivityQueueFull, match="backing off this account"):
        add_memberships(connected_account, newsletter)
    assert sandbox_requests(cc_app) == before  # refused here, never sent

    # Reads of the same account, and other accounts' activities, are unaffected.
    assert len(get_lists(connected_account)["lists"]) == 2
    assert add_memberships(other, other_list.list_id)["activity_id"]


# --- 401 --------------------------------------------------------------------------------------


def test_401_forces_one_refresh_and_the_call_is_retried(cc_app, connected_account):
    stale_version = connected_account.token_version
    stale_token = connected_account.access_token
    # CC stops accepting tokens signed by the old key at once: the stored token is now refused.
    cc_app.sandbox.rotate_keys(retain_seconds=0)
    token_requests = cc_app.sandbox.stats(cc_app.api_key.client_id).token_requests

    assert len(get_lists(connected_account)["lists"]) == 2

    stats = cc_app.sandbox.stats(cc_app.api_key.client_id)
    assert stats.unauthorized == 1
    assert stats.token_requests == token_requests + 1
    account = ConnectedAccount.objects.get(pk=connected_account.pk)
    assert account.token_version == stale_version + 1
    assert account.access_token != stale_token
    assert [(c.status_code, c.attempt) for c in api_calls(cc_app)] == [(401, 1), (200, 2)]


# --- 5xx, resets, timeouts --------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503])
def test_server_error_on_get_is_retried_and_succeeds(cc_app, connected_account, status):
    cc_app.sandbox.inject_api_fault(status, client_id=cc_app.api_key.client_id)

    assert len(get_lists(connected_account)["lists"]) == 2

    stats = cc_app.sandbox.stats(cc_app.api_key.client_id)
    assert (stats.requests, stats.status_5xx, stats.status_2xx) == (
        2 + CONNECT_CALLS,
        1,
        1 + CONNECT_CALLS,
    )
    assert [(c.status_code, c.attempt) for c in api_calls(cc_app)] == [(status, 1), (200, 2)]


def test_503_on_post_is_not_retried(cc_app, connected_account):
    cc_app.sandbox.inject_api_fault(503, client_id=cc_app.api_key.client_id)

    with pytest.raises(CCServerError) as failed:
        cc_call(
            account=connected_account,
            method="POST",
            path="/contact_lists",
            json={"name": "Created once at most"},
        )

    assert failed.value.status == 503
    assert failed.value.error_key == "service_unavailable"
    assert sandbox_requests(cc_app) == 1
    assert len(get_lists(connected_account)["lists"]) == 2  # nothing was created


def test_connection_reset_on_get_is_retried_and_on_post_is_not(cc_app, connected_account):
    client_id = cc_app.api_key.client_id
    cc_app.sandbox.inject_api_fault("reset", client_id=client_id)
    assert len(get_lists(connected_account)["lists"]) == 2
    assert [(c.status_code, c.error_key) for c in api_calls(cc_app)] == [
        (None, "connection_error"),
        (200, ""),
    ]

    cc_app.sandbox.inject_api_fault("reset", client_id=client_id)
    with pytest.raises(CCTransportError, match="after 1 attempt"):
        cc_call(
            account=connected_account,
            method="POST",
            path="/contact_lists",
            json={"name": "Maybe created"},
        )
    stats = cc_app.sandbox.stats(client_id)
    assert (stats.requests, stats.resets) == (3 + CONNECT_CALLS, 2)
    assert api_calls(cc_app).count() == 3


def test_read_timeout_on_get_is_retried_and_on_post_raises(cc_app, connected_account, settings):
    settings.CC_API_READ_TIMEOUT = 0.5
    client_id = cc_app.api_key.client_id
    cc_app.sandbox.inject_api_fault("timeout", client_id=client_id, hold_seconds=10)

    started = time.monotonic()
    assert len(get_lists(connected_account)["lists"]) == 2
    assert time.monotonic() - started < 8  # gave up after the read timeout, not the hold
    assert [(c.error_key, c.attempt) for c in api_calls(cc_app)] == [("timeout", 1), ("", 2)]

    cc_app.sandbox.inject_api_fault("timeout", client_id=client_id, hold_seconds=2)
    with pytest.raises(CCTransportError) as failed:
        cc_call(
            account=connected_account,
            method="POST",
            path="/contact_lists",
            json={"name": "Maybe created"},
        )
    assert failed.value.timeout
    stats = cc_app.sandbox.stats(client_id)
    assert (stats.requests, stats.timeouts) == (3 + CONNECT_CALLS, 2)


# --- other 4xx --------------------------------------------------------------------------------


def test_other_4xx_raise_typed_errors_carrying_cc_body_and_no_token(cc_app, connected_account):
    token = connected_account.access_token
    missing = uuid.uuid4()

    with pytest.raises(CCNotFound) as not_found:
        cc_call(account=connected_account, method="GET", path=f"/contact_lists/{missing}")
    assert not_found.value.status == 404
    assert not_found.value.path == "/contact_lists/{id}"
    assert not_found.value.body[0]["error_key"] == "contacts.api.not_found"
    assert not_found.value.error_key == "contacts.api.not_found"

    with pytest.raises(CCHTTPError) as conflict:
        cc_call(
            account=connected_account,
            method="POST",
            path="/contact_lists",
            json={"name": cc_app.lists[0].name},
        )
    assert conflict.value.status == 409
    assert conflict.value.error_key == "contacts.api.conflict"
    assert conflict.value.body[0]["error_message"] in str(conflict.value)

    with pytest.raises(CCHTTPError) as invalid:
        cc_call(account=connected_account, method="POST", path="/contact_lists", json={})
    assert invalid.value.status == 400
    assert invalid.value.error_key == "contacts.api.validation.error"

    for error in (not_found.value, conflict.value, invalid.value):
        assert token not in str(error)
        assert token not in repr(error)
        assert token[-20:] not in str(error.body)
    assert sandbox_requests(cc_app) == 3  # none of them was retried


# --- the call ledger --------------------------------------------------------------------------


def test_call_ledger_equals_sandbox_counts_over_a_mixed_run(cc_sandbox, transactional_db):
    app = custom_app(cc_sandbox, "ledger-app", per_second=20, per_day=1000, sandbox_per_second=3)
    account = app.connect()
    client_id = app.api_key.client_id

    for _ in range(4):  # the fourth within a second is throttled and retried
        get_lists(account)
    cc_sandbox.inject_api_fault(503, client_id=client_id)
    get_lists(account, lane=Lane.BACKGROUND)
    cc_sandbox.inject_api_fault("reset", client_id=client_id)
    get_lists(account)
    with pytest.raises(CCNotFound):
        cc_call(account=account, method="GET", path=f"/contact_lists/{uuid.uuid4()}")
    cc_sandbox.rotate_keys(retain_seconds=0)
    get_lists(account)  # 401, refresh, retry
    # CC's day ends here, whatever our ledger believes.
    cc_limits(cc_sandbox, client_id, per_second=3, per_day=cc_sandbox.stats(client_id).today_count)
    with pytest.raises(CCQuotaExceeded):
        get_lists(account)

    stats = cc_sandbox.stats(client_id)
    # The whole ledger, the connect's account summary included: CC counted it too.
    calls = list(ApiCall.objects.filter(api_key=app.api_key, kind=CallKind.API))
    statuses = Counter(c.status_code for c in calls)
    error_keys = Counter(c.error_key for c in calls)
    assert len(calls) == stats.requests
    assert statuses[200] == stats.status_2xx
    assert statuses[503] == stats.status_5xx == 1
    assert statuses[401] == stats.unauthorized == 1
    assert error_keys["throttled"] == stats.throttled >= 1
    assert error_keys["quota_exceeded"] == stats.quota_exceeded == 1
    assert error_keys["connection_error"] == stats.resets == 1
    assert sum(1 for c in calls if c.status_code and 400 <= c.status_code < 500) == (
        stats.status_4xx
    )
    token_calls = ApiCall.objects.filter(api_key=app.api_key, kind=CallKind.TOKEN).count()
    assert token_calls == stats.token_requests == 2  # connect + the forced refresh
    usage = DailyUsage.objects.get(api_key=app.api_key)
    assert usage.calls == stats.requests  # API calls: what CC counts against the day
    assert usage.throttled == stats.throttled
    assert usage.quota_exceeded == stats.quota_exceeded
    assert usage.token_calls == stats.token_requests


# --- real OS processes ------------------------------------------------------------------------


def _warm(pool, processes: int) -> None:
    """Wait until every spawned worker has Django set up, so the race starts together."""
    from tests.integrations.services import gateway_workers

    pids: set[int] = set()
    while len(pids) < processes:
        pids.update(pool.map(gateway_workers.pid_after, [0.2] * processes, chunksize=1))


@pytest.mark.slow
def test_eight_processes_hammering_one_key_never_book_two_slots_closer_than_a_spacing(
    cc_sandbox, transactional_db, sandbox_settings
):
    """Eight processes, both lanes, back to back on a 10/s key: every call CC saw was booked,
    and the slots booked by all of them together are a spacing apart. How the arrivals then
    fell at the sandbox (0 throttled, the key's utilisation) depends on the machine's load:
    the utilisation benchmark shows them."""
    per_second, seconds, processes = 10, 10.0, 8
    app = custom_app(cc_sandbox, "hammer-app", per_second=per_second, per_day=100_000)
    account = app.connect()
    cc_sandbox.set_jitter(0, 20)  # arrivals wander as they do over a real network
    overrides = {**sandbox_settings, **POLICY}
    with process_pool(processes, overrides) as pool:
        from tests.integrations.services import gateway_workers

        _warm(pool, processes)
        start = time.time() + 0.5
        task = {"account_id": account.pk, "start": start, "until": start + seconds}
        tasks = [{**task, "lane": Lane.INTERACTIVE if n % 2 else Lane.BACKGROUND} for n in range(8)]
        results = pool.map(gateway_workers.hammer, tasks, chunksize=1)

    answered = sum(r["answered"] for r in results)
    stats = cc_sandbox.stats(app.api_key.client_id)
    assert sum(r["failed"] for r in results) == 0, [e for r in results for e in r["errors"]]
    slots = sorted(slot for r in results for slot in r["slots"])
    assert len(slots) == stats.requests - CONNECT_CALLS == api_calls(app).count()
    spacing = (1 + POLICY["CC_QUOTA_MARGIN"]) / per_second
    assert min(later - earlier for earlier, later in itertools.pairwise(slots)) >= spacing - 1e-6
    assert answered == stats.status_2xx - CONNECT_CALLS
    assert answered >= per_second  # the processes really ran together


@pytest.mark.slow
def test_daily_budget_is_never_exceeded_across_processes(
    cc_sandbox, transactional_db, sandbox_settings
):
    # A per-second limit no 40 calls can reach: the day's budget is all this test is about.
    per_day, processes = 40, 8
    app = custom_app(cc_sandbox, "budget-app", per_second=1000, per_day=per_day)
    account = app.connect()
    overrides = {**sandbox_settings, **POLICY}
    with process_pool(processes, overrides) as pool:
        from tests.integrations.services import gateway_workers

        _warm(pool, processes)
        start = time.time() + 0.5
        tasks = [
            {
                "account_id": account.pk,
                "start": start,
                "lane": Lane.INTERACTIVE if n % 2 else Lane.BACKGROUND,
            }
            for n in range(processes)
        ]
        results = pool.map(gateway_workers.drain, tasks, chunksize=1)

    stats = cc_sandbox.stats(app.api_key.client_id)
    assert sum(r["answered"] for r in results) == per_day - CONNECT_CALLS
    assert sum(r["failed"] for r in results) == 0
    assert stats.today_count == stats.requests == per_day
    assert stats.quota_exceeded == stats.throttled == 0
    # The background lane stopped short, leaving the interactive reserve (5 %) to the others.
    background = api_calls(app).filter(lane=Lane.BACKGROUND).count()
    assert background <= per_day - 2
    assert quota_usage(api_key=app.api_key)["remaining"] == 0


# --- the store down, pagination -----------------------------------------------------------------


def test_with_the_quota_store_down_nothing_reaches_cc(connected_account, cc_app, settings):
    import socket

    from integrations.services.quota import QuotaStoreUnavailable

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.CC_QUOTA_STORE = "integrations.services.quota_stores.RedisStore"
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    before = sandbox_requests(cc_app)
    with pytest.raises(QuotaStoreUnavailable, match="no call was booked"):
        get_lists(connected_account)
    assert sandbox_requests(cc_app) == before
    assert not api_calls(cc_app).exists()


def test_contacts_follow_ccs_cursor_links_one_call_per_page(connected_account, cc_app):
    from integrations.services.gateway import cc_client

    cc_app.sandbox.seed_contacts(cc_app.cc_account, count=120, list_ids=[cc_app.lists[0].list_id])
    before = sandbox_requests(cc_app)
    contacts = list(
        cc_client(account=connected_account).contacts(list_id=cc_app.lists[0].list_id, limit=50)
    )
    assert len(contacts) == 120
    assert len({c["contact_id"] for c in contacts}) == 120
    assert sandbox_requests(cc_app) - before == 3
    assert [c.path_template for c in api_calls(cc_app)] == ["/contacts"] * 3


# --- paths that would leave /v3 ---------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/../oauth2/default/v1/token",
        "/contacts/../../x",
        "/contacts/%2e%2e/%2E%2E/x",
        "/%252e%252e/x",  # encoded twice
        "/contacts/.",
        "//evil.example/v3",
        "https://evil.example/v3/contacts",
        "/contacts%2f..%2fx",
        "/contacts\\..\\x",
        "/contacts\r\nHost: evil",
        "/contacts#fragment",
    ],
)
def test_paths_that_leave_the_api_are_refused(path):
    with pytest.raises(gateway.PathOutsideApi, match="refused"):
        gateway.api_path_check(path)


@pytest.mark.parametrize(
    ("path", "checked"),
    [
        ("/contact_lists", "/contact_lists"),
        ("contacts?limit=5", "/contacts?limit=5"),
        ("/contacts?email=a..b@example.com", "/contacts?email=a..b@example.com"),
        ("/contacts/a..b", "/contacts/a..b"),
    ],
)
def test_paths_inside_the_api_pass(path, checked):
    assert gateway.api_path_check(path) == checked


def test_a_refused_path_books_nothing_and_sends_nothing():
    from tests.factories import ConnectedAccountFactory

    account = ConnectedAccountFactory()
    with pytest.raises(gateway.PathOutsideApi):
        cc_call(account=account, method="GET", path="/../../token")
    assert not ApiCall.objects.exists()
    assert not DailyUsage.objects.exists()

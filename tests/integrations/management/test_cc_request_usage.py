"""``cc_request`` and ``cc_usage`` run as an operator would, against the live sandbox."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from integrations.models import ApiCall, CallKind, Lane
from integrations.services.quota import quota_reserve
from tests.factories import ApiKeyFactory, ConnectedAccountFactory, calls_waited

pytestmark = pytest.mark.django_db(transaction=True)


def run(command: str, *args: str) -> str:
    out = StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


#: Connecting reads CC's account summary: one API call before each test's own.
SUMMARY = "/account/summary"


def sandbox_requests(cc_app) -> int:
    """What reached the sandbox since the account was connected."""
    stats = cc_app.sandbox.stats(cc_app.api_key.client_id)
    return stats.requests - sum(stats.by_path.get(f"GET /v3{SUMMARY}", {}).values())


def command_calls(cc_app):
    """The API calls in the ledger since the account was connected."""
    calls = ApiCall.objects.filter(api_key=cc_app.api_key, kind=CallKind.API)
    return calls.exclude(path_template=SUMMARY)


# --- cc_request -------------------------------------------------------------------------------


def test_cc_request_get_contact_lists_prints_cc_json(cc_app, connected_account):
    answer = json.loads(run("cc_request", "GET", "/contact_lists"))

    assert sorted(item["name"] for item in answer["lists"]) == ["Customers", "Newsletter"]
    assert sandbox_requests(cc_app) == 1
    call = command_calls(cc_app).get()
    assert (call.method, call.path_template, call.status_code) == ("GET", "/contact_lists", 200)


def test_cc_request_passes_the_query_string_as_parameters(cc_app, connected_account):
    answer = json.loads(
        run(
            "cc_request",
            "get",
            "/v3/contact_lists?name=customers",
            "--account",
            str(connected_account.pk),
        )
    )

    assert [item["name"] for item in answer["lists"]] == ["Customers"]
    assert command_calls(cc_app).get().path_template == ("/contact_lists")


def test_cc_request_posts_a_json_body(cc_app, connected_account):
    created = json.loads(run("cc_request", "POST", "/contact_lists", "--json", '{"name": "VIP"}'))

    assert created["name"] == "VIP"
    listed = json.loads(run("cc_request", "GET", "/contact_lists"))
    assert "VIP" in {item["name"] for item in listed["lists"]}


def test_cc_request_shows_cc_errors_readably(cc_app, connected_account):
    with pytest.raises(CommandError, match=r"409 Conflict to POST /contact_lists") as failed:
        run("cc_request", "POST", "/contact_lists", "--json", '{"name": "Newsletter"}')
    assert connected_account.access_token not in str(failed.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("FETCH", "/contact_lists"), "unknown method 'FETCH'"),
        (("POST", "/contact_lists", "--json", "{name: 1}"), "--json is not valid JSON"),
        (("GET", "contact_lists"), "path must start with '/'"),
        (("GET", "/contact_lists", "--account", "999999"), "no connected account with id 999999"),
        (("GET", "/../../oauth2/default/v1/keys"), "would leave /v3"),
        (("GET", "/v3/contacts/%2e%2e/%2E%2E/x"), "would leave /v3"),
        (("GET", "//evil.example/v3/contacts"), "absolute URL"),
    ],
    ids=[
        "bad-method",
        "bad-json",
        "relative-path",
        "unknown-account",
        "dot-dot",
        "encoded-dot-dot",
        "other-host",
    ],
)
def test_cc_request_refuses_bad_input_without_calling_cc(cc_app, connected_account, args, message):
    with pytest.raises(CommandError, match=message):
        run("cc_request", *args)
    assert sandbox_requests(cc_app) == 0


def test_cc_request_without_an_account_says_so(cc_app):
    with pytest.raises(CommandError, match="no connected account"):
        run("cc_request", "GET", "/contact_lists")


# --- cc_usage ---------------------------------------------------------------------------------


def test_cc_usage_reports_today_in_text_and_json(cc_app, connected_account):
    for _ in range(3):
        run("cc_request", "GET", "/contact_lists")

    text = run("cc_usage")
    assert f"Sandbox test app ({cc_app.api_key.client_id}) — standard, 4/s, 10,000/day" in text
    # 3 API calls and the connect's account summary; its token call spends no API budget.
    assert "4 calls, 9,996 remaining" in text
    assert "0 throttled, 0 quota" in text

    [summary] = json.loads(run("cc_usage", "--json", "--key", cc_app.api_key.client_id))
    assert summary["key"] == cc_app.api_key.client_id
    assert summary["calls_today"] == 4
    assert summary["remaining_today"] == 9_996
    assert summary["token_calls_today"] == 1
    assert summary["calls_last_minute"] == 4
    assert summary["utilisation_last_minute"] == pytest.approx(4 / 240)
    by_id = json.loads(run("cc_usage", "--json", "--key", str(cc_app.api_key.pk)))
    assert [s["key"] for s in by_id] == [cc_app.api_key.client_id]


def test_cc_usage_unknown_key_is_an_error(cc_app):
    with pytest.raises(CommandError, match="no API key 'nope'"):
        run("cc_usage", "--key", "nope")


def test_cc_request_in_the_background_lane_is_recorded_so(cc_app, connected_account):
    run("cc_request", "GET", "/contact_lists", "--lane", "background")
    call = command_calls(cc_app).get()
    assert call.lane == "background"


def test_cc_usage_counts_ccs_429s_and_forecasts_exhaustion(cc_sandbox, transactional_db):
    import datetime as dt

    from django.utils import timezone

    from tests.fixtures.portal import CLIENT_SECRET, REDIRECT_URI, make_cc_app

    # The portal believes 20/s and 40/day; CC enforces 1/s and 6/day.
    app = make_cc_app(cc_sandbox, client_id="usage-429s", tier="custom", per_second=20, per_day=40)
    app.connect()
    cc_sandbox.register_client(
        "usage-429s",
        redirect_uris=[REDIRECT_URI],
        client_secret=CLIENT_SECRET,
        tier="custom",
        per_second=1,
        per_day=6,
        refresh_mode="long_lived",
    )
    # Quick calls: CC throttles some (the gateway retries them), then its day runs out.
    with pytest.raises(CommandError, match="quota_exceeded"):
        for _ in range(12):
            run("cc_request", "GET", "/contact_lists")

    [summary] = json.loads(run("cc_usage", "--json", "--key", "usage-429s"))
    stats = cc_sandbox.stats("usage-429s")
    assert summary["throttled_today"] == stats.throttled >= 1
    assert summary["quota_429s_today"] == stats.quota_exceeded == 1
    assert (
        summary["calls_today"]
        == ApiCall.objects.filter(api_key=app.api_key, kind=CallKind.API).count()
    )
    # A dozen calls in the last minutes against 40 a day: the forecast says when it runs out.
    midnight = (timezone.now() + dt.timedelta(days=1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    if midnight - timezone.now() > dt.timedelta(hours=3):
        assert summary["exhausted_at"] is not None
        assert dt.datetime.fromisoformat(summary["exhausted_at"]) < midnight
    text = run("cc_usage", "--key", "usage-429s")
    assert f"{stats.throttled} throttled, 1 quota" in text


# --- cc_usage: each account's part of the key ---------------------------------------------


def test_cc_usage_lists_each_account_of_the_key_after_real_calls(cc_app, connected_account):
    for _ in range(3):
        run("cc_request", "GET", "/contact_lists")

    [summary] = json.loads(run("cc_usage", "--json", "--key", cc_app.api_key.client_id))
    [row] = summary["accounts"]
    made = command_calls(cc_app).filter(account=connected_account)
    assert row["id"] == connected_account.pk
    assert row["name"] == connected_account.display_name
    assert row["calls_today"] >= made.count() == 3
    assert 0 < row["share"] <= 1
    assert row["slot_wait_p50_ms"] is not None
    assert row["slot_wait_p95_ms"] >= row["slot_wait_p50_ms"]

    text = run("cc_usage", "--key", cc_app.api_key.client_id)
    assert "  accounts\n" in text
    assert connected_account.display_name in text.split("  accounts\n", 1)[1]


ACCOUNT_ROW_KEYS = [
    "id",
    "name",
    "calls_today",
    "share",
    "cap",
    "cap_remaining",
    "weight",
    "slot_wait_p50_ms",
    "slot_wait_p95_ms",
]


@pytest.fixture
def shared_key(settings):
    """A key two accounts share, with bookings in the ledger and calls in the log."""
    settings.CC_QUOTA_STORE = "integrations.services.quota_stores.DatabaseStore"
    settings.CC_QUOTA_ACCOUNT_REFRESH = 0.0
    key = ApiKeyFactory(
        name="Shared",
        client_id="shared-key",
        tier="custom",
        custom_per_second=1000,
        custom_per_day=1000,
    )
    busy = ConnectedAccountFactory(api_key=key, label="busy@example.com", share_weight=3)
    capped = ConnectedAccountFactory(api_key=key, label="capped@example.com", daily_cap=2)
    ConnectedAccountFactory(api_key=key, label="idle@example.com", daily_share=0.25)
    for account, times in ((busy, 3), (capped, 2)):
        for _ in range(times):
            quota_reserve(api_key=key, lane=Lane.BACKGROUND, account=account)
    for account, waits in ((busy, (1200, 30, 80)), (capped, (5,))):
        calls_waited(key, account, *waits)
    return key, busy, capped


def test_cc_usage_json_has_each_accounts_row_under_its_key(shared_key):
    _, busy, capped = shared_key

    [summary] = json.loads(run("cc_usage", "--json", "--key", "shared-key"))

    assert summary["key"] == "shared-key" and summary["calls_today"] == 4
    assert [list(row) for row in summary["accounts"]] == [ACCOUNT_ROW_KEYS] * 3
    busy_row, capped_row, idle_row = summary["accounts"]
    assert busy_row == {
        "id": busy.pk,
        "name": "busy@example.com",
        "calls_today": 3,
        "share": pytest.approx(0.6),
        "cap": None,
        "cap_remaining": None,
        "weight": 3,
        "slot_wait_p50_ms": 80,
        "slot_wait_p95_ms": 1200,
    }
    assert (capped_row["id"], capped_row["cap"], capped_row["cap_remaining"]) == (
        capped.pk,
        2,
        0,
    )
    assert (idle_row["name"], idle_row["calls_today"], idle_row["share"]) == (
        "idle@example.com",
        0,
        0.0,
    )
    assert (idle_row["cap"], idle_row["slot_wait_p50_ms"]) == (250, None)


def test_cc_usage_text_appends_a_table_of_the_accounts(shared_key):
    text = run("cc_usage", "--key", "shared-key")

    head, table = text.split("  accounts\n")
    assert "  burn rate    " in head  # the key's own lines come first, as before
    lines = table.splitlines()
    assert lines[0].split() == [
        "account",
        "calls",
        "today",
        "share",
        "cap",
        "weight",
        "wait",
        "p50/p95",
    ]
    assert lines[1].split() == [
        "busy@example.com",
        "3",
        "60%",
        "none",
        "3",
        "80",
        "/",
        "1,200",
        "ms",
    ]
    assert lines[2].split() == [
        "capped@example.com",
        "2",
        "40%",
        "2",
        "(reached)",
        "1",
        "5",
        "/",
        "5",
        "ms",
    ]
    assert lines[3].split() == ["idle@example.com", "0", "0%", "250", "(250", "left)", "1", "—"]
    # The columns line up: every row's share ends where the header's does.
    share_end = lines[0].index("share") + len("share")
    assert all(line[share_end - 1] == "%" for line in lines[1:])


def test_cc_usage_without_the_ledger_still_reports_the_key(shared_key, settings):
    settings.CC_QUOTA_STORE = "integrations.services.quota_stores.RedisStore"
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens there
    out, err = StringIO(), StringIO()
    call_command("cc_usage", "--json", stdout=out, stderr=err)

    [summary] = json.loads(out.getvalue())
    assert summary["calls_today"] == 4 and summary["accounts"] is None
    assert "Shared (shared-key): no per-account figures" in err.getvalue()
    assert "unavailable (the quota ledger does not answer)" in run("cc_usage")

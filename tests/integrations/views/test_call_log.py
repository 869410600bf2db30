"""The call log people investigate with: filters in the URL, cursor paging, a page per call,
the CSV export, and CC's error body kept without a token."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from http import HTTPStatus

import pytest
import requests
from django.urls import reverse

from integrations.constant_contact.errors import CCNotFound
from integrations.models import ApiCall, BulkJob, Lane
from integrations.selectors import CallCursor
from integrations.services import gateway, quota
from integrations.services.audit import ERROR_DETAIL_MAX, api_call_record, calls_attributed_to
from tests.factories import ApiKeyFactory, ConnectedAccountFactory

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 5, 4, 12, 0, tzinfo=dt.UTC)
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEiLCJzY3AiOlsiY29udGFjdF9kYXRhIl19.c2lnbmF0dXJl"


def _call(key, account=None, *, status=200, at=T0, **fields) -> ApiCall:
    return api_call_record(
        api_key=key,
        account=account,
        method=fields.pop("method", "GET"),
        path_template=fields.pop("path", "/contacts"),
        status_code=status,
        at=at,
        **fields,
    )


def _shown(client, query: str = "") -> list[int]:
    """The ids of the calls the log's page shows, in order."""
    page = client.get(reverse("integrations:call_log") + query).content.decode()
    return [int(pk) for pk in re.findall(r'data-call="(\d+)"', page)]


@pytest.fixture
def world(db):
    key, other_key = ApiKeyFactory(name="Main key"), ApiKeyFactory(name="Other key")
    account = ConnectedAccountFactory(api_key=key, label="acme@example.com")
    other = ConnectedAccountFactory(api_key=other_key, label="globex@example.com")
    job = BulkJob.objects.create(account=account, list_id="list-1")
    calls = {
        "ok": _call(key, account, at=T0),
        "throttled": _call(key, account, status=429, error_key="throttled", at=T0 + _s(1)),
        "not_found": _call(other_key, other, status=404, at=T0 + _s(2), path="/contacts/{id}"),
        "server": _call(key, account, status=503, at=T0 + _s(3), lane=Lane.BACKGROUND),
        "no_answer": _call(key, None, status=None, error_key="timeout", at=T0 + _s(4)),
        "tomorrow": _call(other_key, other, at=T0 + dt.timedelta(days=1), path="/activities/{id}"),
    }
    with calls_attributed_to(job):
        calls["job_call"] = _call(key, account, at=T0 + _s(5), method="POST", path="/activities/x")
    return {
        "key": key,
        "other_key": other_key,
        "account": account,
        "other": other,
        "job": job,
        **calls,
    }


def _s(seconds: float) -> dt.timedelta:
    return dt.timedelta(seconds=seconds)


def _ids(world, *names) -> set[int]:
    return {world[name].pk for name in names}


FIRST_DAY = {"ok", "throttled", "not_found", "server", "no_answer", "job_call"}


# --- filters ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "query,expected",
    [
        ("?status=429", {"throttled"}),
        ("?status=4xx", {"throttled", "not_found"}),
        ("?status=5XX", {"server"}),
        ("?status=2xx", {"ok", "tomorrow", "job_call"}),
        ("?status=none", {"no_answer"}),
        ("?lane=background", {"server"}),
        ("?path=ACTIVITIES", {"tomorrow", "job_call"}),
        ("?path=contacts/{", {"not_found"}),
        ("?path=nothing-like-it", set()),
        ("?since=2026-05-05", {"tomorrow"}),
        ("?until=2026-05-04", FIRST_DAY),
        ("?since=2026-05-04T12:00:02&until=2026-05-04T12:00:04Z", {"not_found", "server"}),
        # datetime-local's format (minutes), and a bare date's whole day
        ("?since=2026-05-04T12:00&until=2026-05-04T12:01", FIRST_DAY),
        ("?status=4xx&path=contacts", {"throttled", "not_found"}),
    ],
)
def test_each_filter_narrows_the_log(staff_client, world, query, expected):
    assert set(_shown(staff_client, query)) == _ids(world, *expected)


def test_key_account_and_job_filters_take_ids(staff_client, world):
    key, account, job = world["key"], world["account"], world["job"]
    assert set(_shown(staff_client, f"?key={key.pk}")) == _ids(
        world, "ok", "throttled", "server", "no_answer", "job_call"
    )
    assert set(_shown(staff_client, f"?account={account.pk}")) == _ids(
        world, "ok", "throttled", "server", "job_call"
    )
    assert _shown(staff_client, f"?job={job.pk}") == [world["job_call"].pk]
    assert _shown(staff_client, f"?key={key.pk}&status=429") == [world["throttled"].pk]


@pytest.mark.parametrize(
    "query,message",
    [
        ("?status=banana", "is not a status"),
        ("?status=6xx", "is not a status"),
        ("?status=700", "is not a status"),
        ("?key=abc", "Select a valid choice"),
        ("?account=999999", "Select a valid choice"),
        ("?lane=fast", "Select a valid choice"),
        ("?job=-3", "greater than or equal to 1"),
        ("?since=yesterday", "is not a date or time"),
        ("?until=2026-13-45", "is not a date or time"),
        ("?since=2026-05-05&until=2026-05-04", "must be later than"),
        ("?cursor=not-a-cursor", "page link is damaged"),
    ],
)
def test_a_bad_value_is_a_message_and_leaves_that_filter_out(staff_client, world, query, message):
    response = staff_client.get(reverse("integrations:call_log") + query)
    assert response.status_code == HTTPStatus.OK
    page = response.content.decode()
    errors = re.search(r'<ul class="errorlist" id="filter-errors">(.*?)</ul>', page, re.S)
    assert errors and message in errors.group(1).replace("&quot;", '"')
    expected = set(ApiCall.objects.values_list("pk", flat=True))
    if "until=2026-05-04" in query:  # "since" was fine, and still applies
        expected = _ids(world, "tomorrow")
    assert set(_shown(staff_client, query)) == expected


def test_a_bad_value_beside_good_ones_drops_only_itself(staff_client, world):
    assert _shown(staff_client, f"?key={world['key'].pk}&status=nope&lane=background") == [
        world["server"].pk
    ]


def test_the_form_shows_the_current_values_and_a_clear_link(staff_client, world):
    page = staff_client.get(
        reverse("integrations:call_log") + f"?status=4xx&path=contacts&key={world['key'].pk}"
    ).content.decode()
    assert 'name="status" value="4xx"' in page
    assert 'name="path" value="contacts"' in page
    assert re.search(rf'<option value="{world["key"].pk}" selected>', page)
    assert f'href="{reverse("integrations:call_log")}" id="filters-clear"' in page


# --- rows ---------------------------------------------------------------------------------------
def test_rows_show_the_call_and_mark_errors(staff_client, world):
    page = staff_client.get(reverse("integrations:call_log")).content.decode()
    row = _row(page, world["throttled"].pk)
    assert 'class="error-row"' in row
    assert '<time datetime="2026-05-04T12:00:01+00:00">' in row
    assert "Main key" in row and "acme@example.com" in row
    assert "GET /contacts" in row and "429 throttled" in row
    assert reverse("integrations:call_detail", args=[world["throttled"].pk]) in row
    assert 'class="error-row"' in _row(page, world["no_answer"].pk)
    assert "no answer" in _row(page, world["no_answer"].pk)
    assert 'class="error-row"' not in _row(page, world["ok"].pk)
    job_row = _row(page, world["job_call"].pk)
    assert reverse("integrations:job_detail", args=[world["job"].pk]) in job_row
    assert '<div class="table-scroll">' in page and 'data-label="Status"' in page


def _row(page: str, pk: int) -> str:
    found = re.search(rf'<tr[^>]*data-call="{pk}">.*?</tr>', page, re.S)
    assert found, f"call {pk} is not on the page"
    return found.group(0)


# --- paging -------------------------------------------------------------------------------------
def test_cursor_pages_cover_every_call_once_even_with_equal_timestamps(staff_client, db):
    key = ApiKeyFactory()
    for i in range(130):
        _call(key, at=T0 + _s(i // 7))  # seven calls share each second
    seen, query, pages = [], "?status=2xx", 0
    while True:
        page = staff_client.get(reverse("integrations:call_log") + query).content.decode()
        seen += [int(pk) for pk in re.findall(r'data-call="(\d+)"', page)]
        pages += 1
        older = re.search(r'href="\?([^"]*)" id="calls-older"', page)
        if not older:
            break
        query = "?" + older.group(1).replace("&amp;", "&")
        assert "status=2xx" in query, "the filters travel with the cursor"
        assert (
            'id="calls-newest"'
            in staff_client.get(reverse("integrations:call_log") + query).content.decode()
        )
    expected = list(ApiCall.objects.order_by("-created_at", "-pk").values_list("pk", flat=True))
    assert pages == 3
    assert seen == expected
    assert len(set(seen)) == 130


def test_the_cursor_is_opaque_and_checked():
    cursor = CallCursor(created_at=T0, pk=42)
    assert CallCursor.decode(cursor.encode()) == cursor
    assert "|" not in cursor.encode()
    for bad in ("", "%%%", "MjAyNi0wNS0wNA", "bm90fGF8Y3Vyc29y", "MjAyNi0wNS0wNFQxMjowMHw0Mg"):
        with pytest.raises(ValueError):
            CallCursor.decode(bad)


def test_a_page_needs_no_count_and_no_offset(staff_client, world, django_assert_max_num_queries):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        staff_client.get(reverse("integrations:call_log") + "?status=4xx&path=contacts")
    sql = " ".join(q["sql"].upper() for q in queries.captured_queries)
    assert "OFFSET" not in sql
    assert "COUNT(" not in sql


# --- one call -----------------------------------------------------------------------------------
def test_the_call_page_shows_ccs_error_body_shortened_and_never_a_token(staff_client, world):
    account = world["account"]
    body = json.dumps(
        [{"error_key": "contacts.api.bad", "error_message": "Bearer secret-opaque-token " + JWT}]
    )
    call = _call(
        world["key"],
        account,
        status=400,
        error_key="contacts.api.bad",
        error_detail=body + " " + "x" * 3000,
    )
    page = staff_client.get(reverse("integrations:call_detail", args=[call.pk])).content.decode()
    shown = re.search(r'<pre id="error-detail">(.*?)</pre>', page, re.S).group(1)
    assert "contacts.api.bad" in shown
    assert len(shown.replace("&quot;", '"')) <= ERROR_DETAIL_MAX
    for secret in (JWT, JWT.split(".")[1], "secret-opaque-token", account.access_token):
        assert secret not in page


def test_the_call_page_lists_the_other_attempts_of_the_request(staff_client, world):
    key, account = world["key"], world["account"]
    first = _call(key, account, status=503, at=T0 + _s(60), path="/contact_lists", attempt=1)
    _call(key, account, status=200, at=T0 + _s(60.5), path="/contact_lists")  # another request
    second = _call(key, account, status=503, at=T0 + _s(61), path="/contact_lists", attempt=2)
    third = _call(key, account, status=200, at=T0 + _s(63), path="/contact_lists", attempt=3)
    page = staff_client.get(reverse("integrations:call_detail", args=[second.pk])).content.decode()
    attempts = re.search(r'<table class="reflow" id="attempts">.*?</table>', page, re.S).group(0)
    assert reverse("integrations:call_detail", args=[first.pk]) in attempts
    assert reverse("integrations:call_detail", args=[third.pk]) in attempts
    assert "2 (this one)" in attempts
    assert attempts.count("<tr") == 4  # the header and three attempts


def test_an_unknown_call_is_404(staff_client, db):
    assert staff_client.get(reverse("integrations:call_detail", args=[999])).status_code == 404


# --- export -------------------------------------------------------------------------------------
def test_the_export_streams_the_filtered_log_as_csv(staff_client, world):
    response = staff_client.get(reverse("integrations:call_export") + "?status=4xx")
    assert response.status_code == HTTPStatus.OK
    assert response.streaming
    assert response["Content-Type"].startswith("text/csv")
    assert re.fullmatch(
        r'attachment; filename="ccportal-calls-\d{4}-\d{2}-\d{2}\.csv"',
        response["Content-Disposition"],
    )
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == [
        "id", "time", "key", "account", "method", "path", "status",
        "error_key", "latency_ms", "attempt", "lane", "job",
    ]  # fmt: skip
    assert [int(row[0]) for row in rows[1:]] == [world["not_found"].pk, world["throttled"].pk]
    throttled = rows[2]
    assert throttled[1:8] == [
        "2026-05-04T12:00:01+00:00", "Main key", "acme@example.com", "GET", "/contacts",
        "429", "throttled",
    ]  # fmt: skip


def test_the_export_guards_cells_a_spreadsheet_would_run(staff_client, db):
    key = ApiKeyFactory(name="=HYPERLINK(1)")
    account = ConnectedAccountFactory(api_key=key, label="@SUM(A1)")
    _call(key, account, status=400, error_key="-2+3", path="+cmd")
    response = staff_client.get(reverse("integrations:call_export"))
    (_, row) = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert row[2:6] == ["'=HYPERLINK(1)", "'@SUM(A1)", "GET", "'+cmd"]
    assert row[7] == "'-2+3"


def test_the_export_reads_the_log_in_chunks(staff_client, world, monkeypatch):
    from django.db.models import QuerySet

    chunks = []
    original = QuerySet.iterator

    def iterator(self, chunk_size=None):
        chunks.append(chunk_size)
        return original(self, chunk_size=chunk_size)

    monkeypatch.setattr(QuerySet, "iterator", iterator)
    b"".join(staff_client.get(reverse("integrations:call_export")).streaming_content)
    assert chunks == [2000]


# --- who may look -------------------------------------------------------------------------------
@pytest.mark.parametrize("name,args", [("call_log", []), ("call_detail", [1]), ("call_export", [])])
def test_anonymous_visitors_go_to_the_login(client, db, name, args):
    response = client.get(reverse(f"integrations:{name}", args=args))
    assert response.status_code == HTTPStatus.FOUND
    assert response.url.startswith("/login/")


def test_the_pages_link_to_their_calls(staff_client, world):
    account, job = world["account"], world["job"]
    log = reverse("integrations:call_log")
    account_page = staff_client.get(reverse("integrations:account_detail", args=[account.pk]))
    assert f'href="{log}?account={account.pk}"' in account_page.content.decode()
    job_page = staff_client.get(reverse("integrations:job_detail", args=[job.pk]))
    assert f'href="{log}?job={job.pk}"' in job_page.content.decode()


# --- recording CC's error body ------------------------------------------------------------------
def test_api_call_record_keeps_the_error_body_scrubbed_and_shortened(db):
    key = ApiKeyFactory()
    body = (
        '{"error_message": "bad", "access_token": "opaque-123", "echo": "Authorization: '
        f'Bearer opaque-456", "jwt": "{JWT}", "url": "https://u:pw@cc.example/?code=c0de"}}'
    )
    call = _call(key, status=400, error_detail=body + "y" * 5000)
    call.refresh_from_db()
    assert call.error_detail.startswith('{"error_message": "bad"')
    assert len(call.error_detail) == ERROR_DETAIL_MAX
    for secret in ("opaque-123", "opaque-456", JWT, JWT[:40], ":pw@", "c0de"):
        assert secret not in call.error_detail
    assert _call(key).error_detail == ""


def test_the_gateway_records_ccs_error_body(db, monkeypatch):
    account = ConnectedAccountFactory()
    body = [{"error_key": "contacts.api.not_found", "error_message": "No list with that id"}]
    answer = requests.Response()
    answer.status_code = HTTPStatus.NOT_FOUND
    answer.headers["Content-Type"] = "application/json"
    answer._content = json.dumps(body).encode()

    class Session:
        def request(self, *args, **kwargs):
            return answer

    monkeypatch.setattr(gateway, "access_token", lambda **kwargs: JWT)
    slot = quota.Reservation(api_key_id=account.api_key_id, lane="interactive", send_at=0, wait=0)
    monkeypatch.setattr(gateway.quota, "quota_acquire", lambda **kwargs: slot)
    monkeypatch.setattr(gateway, "shared_session", lambda **kwargs: Session())
    with pytest.raises(CCNotFound):
        gateway.cc_call(account=account, method="GET", path="/contact_lists/1")
    call = ApiCall.objects.get()
    assert json.loads(call.error_detail) == body
    assert call.error_key == "contacts.api.not_found"

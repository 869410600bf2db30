"""The portal's pages against the sandbox: what staff see, and what bad input gets them.

No worker runs here: jobs stay where the view leaves them, so each test sees exactly what the
view did (the end-to-end runs through a worker are in ``services/test_bulk_runner.py`` and
``browser/test_sync.py``).
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from integrations.models import ApiCall, BulkJob, JobState
from integrations.services import bulk_jobs
from integrations.services.oauth import account_disconnect
from tests.factories import StaffFactory

pytestmark = pytest.mark.django_db(transaction=True)

SYNC_PATHS = ("POST /v3/activities/contact_exports", "POST /v3/activities/contacts_json_import")


@pytest.fixture
def portal(connected_account, cc_app):
    """A logged-in staff browser and the connected account it looks at."""
    call_command("createcachetable", verbosity=0)
    browser = Client()
    browser.force_login(StaffFactory())
    browser.account = connected_account
    browser.app = cc_app
    browser.list_id = cc_app.lists[0].list_id
    return browser


def _sync_url(portal, list_id: str | None = None) -> str:
    return reverse("integrations:sync_start", args=[portal.account.pk, list_id or portal.list_id])


def _upload(body: bytes, name: str = "members.csv"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, body, content_type="text/csv")


def _sync_calls(portal) -> int:
    by_path = portal.app.sandbox.stats(portal.app.api_key.client_id).by_path
    return sum(sum(by_path.get(path, {}).values()) for path in SYNC_PATHS)


def _job(portal, *, state: str = JobState.PLANNING) -> BulkJob:
    job = bulk_jobs.bulk_job_create(
        account=portal.account,
        list_id=portal.list_id,
        csv_chunks=iter([b"email\na@example.com\n"]),
    )
    BulkJob.objects.filter(pk=job.pk).update(state=state)
    job.refresh_from_db()
    return job


# --- who may look ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,args",
    [
        ("integrations:dashboard", []),
        ("integrations:account_list", []),
        ("integrations:job_list", []),
        ("integrations:call_log", []),
        ("integrations:account_detail", [1]),
        ("integrations:job_detail", [1]),
    ],
)
def test_anonymous_visitors_are_sent_to_the_login_page(client, db, name, args):
    response = client.get(reverse(name, args=args))
    assert response.status_code == 302
    assert "/login/" in response.url


def test_every_page_renders_and_shows_no_secret(portal):
    from integrations.services.gateway import cc_call

    account = portal.account
    cc_call(account=account, method="GET", path="/contact_lists")
    job = _job(portal)
    urls = [
        reverse("integrations:dashboard"),
        reverse("integrations:account_list"),
        reverse("integrations:account_detail", args=[account.pk]),
        reverse("integrations:account_lists", args=[account.pk]),
        _sync_url(portal),
        reverse("integrations:job_list"),
        reverse("integrations:job_detail", args=[job.pk]),
        reverse("integrations:job_progress", args=[job.pk]),
        reverse("integrations:call_log"),
    ]
    account.refresh_from_db()
    secrets = [account.access_token, account.refresh_token, account.api_key.client_secret]
    assert all(secrets)
    for url in urls:
        response = portal.get(url)
        assert response.status_code == 200, url
        page = response.content.decode()
        for secret in secrets:
            assert secret not in page, url
    lists_page = portal.get(urls[3]).content.decode()
    assert "Newsletter" in lists_page and 'id="sync-1"' in lists_page
    assert "GET" in portal.get(reverse("integrations:call_log")).content.decode()


@pytest.mark.parametrize(
    "name",
    ["integrations:account_detail", "integrations:job_detail", "integrations:job_progress"],
)
def test_unknown_ids_are_404(portal, name):
    assert portal.get(reverse(name, args=[99_999])).status_code == 404


# --- the account's lists --------------------------------------------------------------------
def test_lists_partial_says_when_cc_fails_instead_of_erroring(portal):
    portal.app.sandbox.inject_api_fault(503, count=10, client_id=portal.app.api_key.client_id)
    response = portal.post(
        reverse("integrations:account_lists_refresh", args=[portal.account.pk]),
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    assert "Could not load data from Constant Contact" in response.content.decode()
    portal.app.sandbox.clear_faults()


def _list_reads() -> int:
    return ApiCall.objects.filter(path_template="/contact_lists").count()


def _as_of(page: str) -> str:
    """The ``datetime`` of the lists card's "as of" time."""
    match = re.search(r'Member counts as of <time datetime="([^"]+)" data-local-time>', page)
    assert match, "the lists card says when CC reported the counts"
    return match.group(1)


def test_lists_card_says_as_of_when_and_refresh_reads_cc_again_in_place(portal):
    lists_url = reverse("integrations:account_lists", args=[portal.account.pk])
    refresh_url = reverse("integrations:account_lists_refresh", args=[portal.account.pk])
    first = portal.get(lists_url).content.decode()
    first_as_of = _as_of(first)
    assert dt.datetime.fromisoformat(first_as_of).tzinfo is not None
    assert f'hx-post="{refresh_url}"' in first and 'id="lists-refresh"' in first
    assert _list_reads() == 1
    assert _as_of(portal.get(lists_url).content.decode()) == first_as_of, "served from cache"
    assert _list_reads() == 1

    newsletter = portal.app.lists[0]
    portal.app.sandbox.seed_contacts(portal.app.cc_account, count=3, list_ids=[newsletter.list_id])
    refreshed = portal.post(refresh_url, HTTP_HX_REQUEST="true")
    assert refreshed.status_code == 200
    page = refreshed.content.decode()
    assert page.startswith('<div id="account-lists">'), "the card alone, for htmx to swap"
    assert _list_reads() == 2, "one call to CC, through the gateway"
    assert re.search(r"<td>Newsletter</td>\s*<td>3</td>", page)
    assert _as_of(page) >= first_as_of
    # The next page view shows the counts just read, not the older cached ones.
    assert _as_of(portal.get(lists_url).content.decode()) == _as_of(page)
    assert _list_reads() == 2


def test_refresh_without_htmx_goes_back_to_the_account_page(portal):
    refresh_url = reverse("integrations:account_lists_refresh", args=[portal.account.pk])
    response = portal.post(refresh_url)
    assert response.status_code == 302
    assert response["Location"] == reverse("integrations:account_detail", args=[portal.account.pk])
    assert _list_reads() == 1
    assert portal.get(refresh_url).status_code == 405, "a refresh spends budget: POST only"


def test_refresh_needs_the_operate_permission_and_a_csrf_token(portal):
    from django.contrib.auth.models import Permission

    refresh_url = reverse("integrations:account_lists_refresh", args=[portal.account.pk])
    user = StaffFactory(username="viewer", is_superuser=False)
    user.user_permissions.add(Permission.objects.get(codename="view_portal"))
    viewer = Client()
    viewer.force_login(user)
    lists = viewer.get(reverse("integrations:account_lists", args=[portal.account.pk]))
    assert "Member counts as of" in lists.content.decode()
    assert 'id="lists-refresh"' not in lists.content.decode(), "no button it may not press"
    assert viewer.post(refresh_url, HTTP_HX_REQUEST="true").status_code == 403
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(StaffFactory())
    assert strict.post(refresh_url, HTTP_HX_REQUEST="true").status_code == 403
    assert _list_reads() == 1, "only the viewer's page read the lists"


def test_pages_name_the_account_by_organisation_and_login_email(portal):
    from integrations.services.gateway import cc_call

    account = portal.account
    name = "Example Owner&#x27;s organization (owner@example.com)"
    cc_call(account=account, method="GET", path="/contact_lists")
    call = ApiCall.objects.filter(account=account).latest("pk")
    job = _job(portal)
    pages = {
        "account list": reverse("integrations:account_list"),
        "dashboard panel": reverse("integrations:key_panel", args=[account.api_key.pk]),
        "job list": reverse("integrations:job_list"),
        "job": reverse("integrations:job_detail", args=[job.pk]),
        "sync": _sync_url(portal),
        "call log": reverse("integrations:call_log"),
        "call": reverse("integrations:call_detail", args=[call.pk]),
        "admin": reverse("admin:integrations_connectedaccount_changelist"),
    }
    for what, url in pages.items():
        page = portal.get(url).content.decode()
        assert name in page, what
    detail = portal.get(reverse("integrations:account_detail", args=[account.pk])).content
    detail = detail.decode()
    assert f"<h1>{name}</h1>" in detail
    assert account.cc_user_id in detail, "the CC user id stays on the account's page"
    assert 'id="account-login-email">owner@example.com<' in detail
    log = portal.get(reverse("integrations:call_log")).content.decode()
    assert f'<option value="{account.pk}">{name}</option>' in log, "the account filter"


def test_lists_partial_of_a_disconnected_account_asks_to_connect(portal):
    account_disconnect(account=portal.account)
    response = portal.get(reverse("integrations:account_lists", args=[portal.account.pk]))
    assert response.status_code == 200
    assert "Connect the account to see its lists" in response.content.decode()
    assert not ApiCall.objects.filter(
        account=portal.account, path_template__contains="contact_lists"
    )


def test_sync_page_of_a_disconnected_account_explains_instead_of_erroring(portal):
    account_disconnect(account=portal.account)
    response = portal.get(_sync_url(portal))
    assert response.status_code == 502
    assert "Could not load data from Constant Contact" in response.content.decode()


# --- starting a sync ------------------------------------------------------------------------
def test_sync_of_a_list_the_account_does_not_have_is_404(portal):
    response = portal.get(_sync_url(portal, "00000000-0000-0000-0000-000000000000"))
    assert response.status_code == 404
    assert "That list does not exist" in response.content.decode()


@pytest.mark.parametrize(
    "body,message",
    [
        (b"name,phone\nAnn,123\n", "email column"),
        ("email\nj\u00f6rg@example.com\n".encode("latin-1"), "line 2 is not UTF-8"),
        (b"email\n" + b"\x00\x9f\x12" * 100, "binary"),
    ],
)
def test_bad_csv_shows_the_reason_creates_no_job_and_sends_nothing(portal, body, message):
    before = _sync_calls(portal)
    response = portal.post(_sync_url(portal), {"csv_file": _upload(body), "mode": "replace"})
    assert response.status_code == 400
    page = response.content.decode()
    assert "Nothing was sent to Constant Contact" in page
    assert message.lower() in page.lower()
    assert not BulkJob.objects.exists()
    assert _sync_calls(portal) == before


def test_an_empty_upload_is_a_form_error(portal):
    response = portal.post(_sync_url(portal), {"csv_file": _upload(b""), "mode": "replace"})
    assert response.status_code == 400
    assert "The submitted file is empty" in response.content.decode()
    assert not BulkJob.objects.exists()


def test_sync_needs_exactly_one_source_of_members(portal):
    other = portal.app.lists[1].list_id
    neither = portal.post(_sync_url(portal), {"mode": "replace"})
    both = portal.post(
        _sync_url(portal),
        {"csv_file": _upload(b"email\na@example.com\n"), "source_list_id": other, "mode": "add"},
    )
    for response in (neither, both):
        assert response.status_code == 400
        assert "Upload a CSV or choose a source list" in response.content.decode()
    assert not BulkJob.objects.exists()


def test_unknown_mode_is_a_form_error(portal):
    response = portal.post(
        _sync_url(portal), {"csv_file": _upload(b"email\na@example.com\n"), "mode": "merge"}
    )
    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()
    assert not BulkJob.objects.exists()


def test_a_good_csv_makes_a_job_that_is_planned_before_anything_changes(portal):
    response = portal.post(
        _sync_url(portal),
        {"csv_file": _upload(b"email,first_name\na@example.com,Ann\n"), "mode": "add"},
    )
    job = BulkJob.objects.get()
    assert response.status_code == 302
    assert response.url == reverse("integrations:job_detail", args=[job.pk])
    assert (job.state, job.mode, job.list_id) == (JobState.PLANNING, "add", portal.list_id)
    assert _sync_calls(portal) == 0, "planning happens in the worker, after the redirect"


# --- acting on a job ------------------------------------------------------------------------
def test_job_actions_need_post(portal):
    job = _job(portal)
    response = portal.get(reverse("integrations:job_action", args=[job.pk, "cancel"]))
    assert response.status_code == 405
    assert _job_state(job) == JobState.PLANNING


def _job_state(job: BulkJob) -> str:
    job.refresh_from_db()
    return job.state


def test_unknown_action_is_404_and_changes_nothing(portal):
    job = _job(portal)
    response = portal.post(reverse("integrations:job_action", args=[job.pk, "explode"]))
    assert response.status_code == 404
    assert _job_state(job) == JobState.PLANNING


@pytest.mark.parametrize(
    "action,state",
    [
        ("run", JobState.PLANNING),
        ("run", JobState.COMPLETED),
        ("retry", JobState.COMPLETED),
        ("resume", JobState.RUNNING),
        ("schedule", JobState.CANCELLED),
    ],
)
def test_an_action_that_does_not_fit_the_job_explains_why(portal, action, state):
    job = _job(portal, state=state)
    response = portal.post(reverse("integrations:job_action", args=[job.pk, action]), follow=True)
    assert response.status_code == 200
    notes = [str(m) for m in response.context["messages"]]
    assert len(notes) == 1 and notes[0], notes
    assert _job_state(job) == state
    assert BulkJob.objects.count() == 1


def test_cancel_of_a_job_no_worker_holds_is_immediate(portal):
    job = _job(portal, state=JobState.PLANNED)
    response = portal.post(reverse("integrations:job_action", args=[job.pk, "cancel"]))
    assert response.status_code == 302
    assert _job_state(job) == JobState.CANCELLED
    page = portal.get(reverse("integrations:job_progress", args=[job.pk])).content.decode()
    assert 'data-state="cancelled"' in page
    assert "hx-get" not in page, "a finished job stops polling"


def test_run_of_a_plan_whose_removals_need_confirming_needs_the_box_ticked(portal):
    job = _job(portal, state=JobState.PLANNED)
    note = "Confirm the removals before running: it removes 9 of 10 members."
    plan = {
        "strategy": "batches",
        "calls_after_export": 3,
        "removes": 9,
        "removals_need_confirmation": True,
        "removal_note": note,
    }
    BulkJob.objects.filter(pk=job.pk).update(plan=plan)
    page = portal.get(reverse("integrations:job_progress", args=[job.pk])).content.decode()
    assert 'id="confirm-removals"' in page and note in page
    url = reverse("integrations:job_action", args=[job.pk, "run"])
    refused = portal.post(url, follow=True).content.decode()
    assert "Nothing changed: Confirm the removals" in refused
    assert _job_state(job) == JobState.PLANNED
    portal.post(url, {"confirm_removals": "yes"})
    assert _job_state(job) == JobState.QUEUED


def test_run_of_a_planned_job_queues_it(portal):
    job = _job(portal, state=JobState.PLANNED)
    BulkJob.objects.filter(pk=job.pk).update(plan={"strategy": "batches", "calls_after_export": 3})
    portal.post(reverse("integrations:job_action", args=[job.pk, "run"]))
    assert _job_state(job) == JobState.QUEUED
    page = portal.get(reverse("integrations:job_progress", args=[job.pk])).content.decode()
    assert "hx-get" in page and 'id="job-cancel"' in page


def test_rejected_rows_download_is_csv_with_neutralised_formulas(portal):
    body = b"email,first_name\nok@example.com,Ok\n=HYPERLINK(1),x\nbad-address,=1+2\n"
    job = bulk_jobs.bulk_job_create(
        account=portal.account, list_id=portal.list_id, csv_chunks=iter([body])
    )
    response = portal.get(reverse("integrations:job_rejected_csv", args=[job.pk]))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert f"sync-{job.pk}-rejected-rows.csv" in response["Content-Disposition"]
    lines = response.content.decode().splitlines()
    assert lines[0] == "rejected_by,line,email,reason"
    assert len(lines) == 3
    assert all(",=" not in line and not line.startswith("=") for line in lines)


# --- connecting while the quota store is down -------------------------------------------------
def test_callback_with_the_quota_store_down_explains_and_shows_no_code(cc_app, settings):
    import socket
    from urllib.parse import parse_qs, urlsplit

    browser = Client()
    browser.force_login(StaffFactory())
    response = browser.post(reverse("integrations:connect", args=[cc_app.api_key.pk]))
    query = {k: v[0] for k, v in parse_qs(urlsplit(response["Location"]).query).items()}
    code = cc_app.sandbox.authorize(
        cc_app.api_key.client_id, query["redirect_uri"], query["scope"], query["state"]
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.CC_QUOTA_STORE = "integrations.services.quota_stores.RedisStore"
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"

    response = browser.get(
        reverse("integrations:connect_callback"), {"code": code, "state": query["state"]}
    )
    assert response.status_code == 503
    page = response.content.decode()
    assert "Try connecting again" in page
    assert code not in page
    assert cc_app.sandbox.stats(cc_app.api_key.client_id).token_requests == 0


def _callback_view(request):
    raise RuntimeError("boom")


def _exc_info_of_a_failing_callback(request):
    import sys

    try:
        _callback_view(request)
    except RuntimeError:
        return sys.exc_info()


def test_error_reports_hide_the_callbacks_code_and_state(rf):
    import secrets

    from django.views.debug import ExceptionReporter

    from integrations.debug import SecretSafeExceptionReporter

    request = rf.get(
        "/accounts/callback/",
        {"code": secrets.token_urlsafe(16), "state": secrets.token_urlsafe(16)},
    )
    info = _exc_info_of_a_failing_callback(request)
    plain = ExceptionReporter(request, *info).get_traceback_html()
    assert request.GET["code"] in plain, "Django's own report shows it"
    report = SecretSafeExceptionReporter(request, *info)
    for text in (report.get_traceback_html(), report.get_traceback_text()):
        assert request.GET["code"] not in text and request.GET["state"] not in text
        assert "boom" in text and "/accounts/callback/" in text


def test_a_secret_no_key_opens_is_named_on_its_page_and_breaks_no_list(portal, settings):
    from cryptography.fernet import Fernet

    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    for page in ("account_detail", "account_list", "dashboard"):
        args = [portal.account.pk] if page == "account_detail" else []
        response = portal.get(reverse(f"integrations:{page}", args=args))
        assert response.status_code == 200, page
    detail = portal.get(reverse("integrations:account_detail", args=[portal.account.pk]))
    assert "unreadable" in detail.content.decode()


# --- account status as staff see it ----------------------------------------------------------
def test_an_account_cc_refused_shows_why_and_offers_reconnect(staff_client):
    import datetime as dt

    from django.utils import timezone

    from integrations.models import AccountStatus, RefreshMode
    from tests.factories import ConnectedAccountFactory

    account = ConnectedAccountFactory(
        status=AccountStatus.NEEDS_RECONNECT,
        status_reason="Constant Contact refused the refresh token (invalid_grant).",
        refresh_mode=RefreshMode.ROTATING,
        refresh_token_issued_at=timezone.now() - dt.timedelta(days=40),
    )
    listing = staff_client.get(reverse("integrations:account_list")).content.decode()
    reconnect = reverse("integrations:reconnect", args=[account.pk])
    assert f'action="{reconnect}"' in listing and "40 days" in listing and "Rotating" in listing
    page = staff_client.get(
        reverse("integrations:account_detail", args=[account.pk])
    ).content.decode()
    assert "Needs reconnect" in page and "invalid_grant" in page
    assert 'class="primary" id="reconnect"' in page
    assert "long-lived setting is safer" in page


def test_connect_and_disconnect_refuse_posts_without_a_csrf_token(db):
    from tests.factories import ConnectedAccountFactory

    account = ConnectedAccountFactory()
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(StaffFactory())
    for url in (
        reverse("integrations:disconnect", args=[account.pk]),
        reverse("integrations:reconnect", args=[account.pk]),
        reverse("integrations:connect", args=[account.api_key.pk]),
    ):
        assert browser.post(url).status_code == 403, url
        assert browser.get(url).status_code == 405, url
    account.refresh_from_db()
    assert account.access_token and account.status == "active"

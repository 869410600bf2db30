"""The job pages, the sync form and the commands tell one story: the same call figures, a bar
that follows CC, when a job finished and how long it took.

Fast tier: CC is a scripted :class:`FakeSender` at the client seam, and every call it answers
is recorded as the gateway records it (an ``ApiCall`` of the job), so "calls used" is checked
against real rows.
"""

from __future__ import annotations

import datetime as dt
import html
import re
import uuid
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from integrations.constant_contact.client import ConstantContact
from integrations.models import ApiCall, BulkJob, JobPhase, JobState, Lane
from integrations.services import audit, gateway
from integrations.services.bulk_csv import desired_from_csv
from integrations.services.bulk_fields import column_key
from integrations.services.bulk_jobs import SAMPLE_COLUMNS
from tests.factories import (
    OPERATORS,
    VIEWERS,
    ConnectedAccountFactory,
    PortalUserFactory,
    StaffFactory,
)

pytestmark = pytest.mark.django_db

LIST = str(uuid.uuid4())
MEMBER = str(uuid.uuid4())


@pytest.fixture(autouse=True)
def no_waits(settings):
    settings.CC_BULK_FIRST_POLL_DELAY = 0.0
    settings.CC_BULK_MAX_POLL_DELAY = 0.0


@pytest.fixture
def recorded_cc(fake_cc, monkeypatch):
    """``fake_cc``, each call it answers recorded as an ``ApiCall`` (of the job, while a job's
    step sends it), as the gateway would."""

    def client(*, account, lane: str = Lane.INTERACTIVE) -> ConstantContact:
        def send(method: str, path: str, **kwargs: Any) -> Any:
            audit.api_call_record(
                api_key=account.api_key,
                account=account,
                method=method,
                path_template=path.split("?", 1)[0],
                status_code=200,
                lane=lane,
            )
            return fake_cc(method, path, **kwargs)

        return ConstantContact(send)

    monkeypatch.setattr(gateway, "cc_client", client)
    return fake_cc


def _activity(activity_id: str, state: str = "initialized", percent: int = 0, **extra) -> dict:
    return {"activity_id": activity_id, "state": state, "percent_done": percent, **extra}


def _script_sync(fake) -> None:
    """The list holds kept@ and old@; the export takes three polls, the run's wave two."""
    fake.answer("POST", "/activities/contact_exports", _activity("e1"))
    fake.answer("GET", "/activities/e1", _activity("e1", "processing", 40), times=1)
    fake.answer("GET", "/activities/e1", _activity("e1", "processing", 80), times=1)
    fake.answer("GET", "/activities/e1", _activity("e1", "completed", 100))
    fake.answer(
        "GET",
        "/contact_exports/e1",
        f"Email Address,Contact Id\nkept@example.com,{uuid.uuid4()}\nold@example.com,{MEMBER}\n",
    )
    fake.answer("POST", "/activities/contacts_json_import", _activity("i1"))
    fake.answer("POST", "/activities/remove_list_memberships", _activity("r1"))
    fake.answer(
        "GET",
        "/activities",
        {"activities": [_activity("i1", "processing", 50), _activity("r1", "completed", 100)]},
        times=1,
    )
    # Only the import is left: it is polled alone.
    fake.answer("GET", "/activities/i1", _activity("i1", "completed", 100))


def _cli(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def _sync_by_cli(account, tmp_path, monkeypatch) -> tuple[BulkJob, str]:
    monkeypatch.setattr(
        "integrations.management.commands.cc_sync_list.account_contact_list",
        lambda **kwargs: {"list_id": LIST, "name": "Newsletter"},
    )
    path = tmp_path / "members.csv"
    path.write_text("email\nnew@example.com\nkept@example.com\n")
    output = _cli(
        "cc_sync_list",
        "--account",
        str(account.pk),
        "--list",
        LIST,
        "--csv",
        str(path),
        "--yes",
        "--allow-removals",
    )
    return BulkJob.objects.get(), output


@pytest.fixture
def staff() -> Client:
    browser = Client()
    browser.force_login(StaffFactory())
    return browser


def _text(page: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</', page, re.S)
    assert match, f"no #{element_id} on the page"
    return re.sub(r"\s+", " ", match.group(1)).strip()


# --- one figure for the calls -------------------------------------------------------------------
def test_plan_job_page_list_and_commands_show_the_same_call_figures(
    recorded_cc, staff, tmp_path, monkeypatch
):
    account = ConnectedAccountFactory()
    _script_sync(recorded_cc)
    job, sync_output = _sync_by_cli(account, tmp_path, monkeypatch)
    assert job.state == JobState.COMPLETED, job.error

    made = ApiCall.objects.filter(bulk_job=job).count()
    # Planning: the export, three polls, the download; the run: two submissions, two polls.
    assert made == len(recorded_cc.calls) == 9
    assert job.plan["planning_calls"] == 5
    planned = job.calls_planned
    assert planned == job.calls_planned_for() == 5 + job.plan["calls_after_export"] == 9
    expected = f"{made} of {planned} planned calls used"

    # The CLI's plan and its last line.
    assert f"= {planned} planned (one call per contact" in sync_output
    assert f"{planned} API calls planned." in sync_output
    assert f"{expected}, took" in sync_output
    # The job's page (plan and progress) and the list.
    page = staff.get(reverse("integrations:job_detail", args=[job.pk])).content.decode()
    assert _text(page, "plan-calls") == str(planned)
    assert f"= {planned} planned (one call per contact" in page
    assert _text(page, "job-calls") == expected
    listing = staff.get(reverse("integrations:job_list")).content.decode()
    row = re.search(rf'<tr id="job-row-{job.pk}">(.*?)</tr>', listing, re.S).group(1)
    assert f">{expected}</td>" in row
    # cc_jobs, one line and in full.
    assert expected in _cli("cc_jobs", "list")
    shown = _cli("cc_jobs", "show", str(job.pk))
    assert expected in shown and f"{planned} API calls planned." in shown


def test_calls_used_are_the_jobs_recorded_calls(recorded_cc, staff):
    account = ConnectedAccountFactory()
    job = BulkJob.objects.create(
        account=account, list_id=LIST, state=JobState.RUNNING, calls_planned=7, calls_used=0
    )
    with audit.calls_attributed_to(job):
        for _ in range(3):
            audit.api_call_record(
                api_key=account.api_key,
                account=account,
                method="GET",
                path_template="/activities",
                status_code=200,
            )
    audit.api_call_record(  # another caller's: not the job's
        api_key=account.api_key, account=account, method="GET", path_template="/x", status_code=200
    )
    page = staff.get(reverse("integrations:job_progress", args=[job.pk])).content.decode()
    assert _text(page, "job-calls") == "3 of 7 planned calls used"
    assert BulkJob.objects.with_calls_made().get(pk=job.pk).calls_made == 3


def test_a_job_past_its_plan_says_so_plainly(db):
    job = BulkJob(calls_planned=10)
    job.calls_made_count = 11
    assert job.calls_text == "11 calls used (10 planned)"


def test_the_plan_explains_the_interactive_reserve_from_the_quota_figure(recorded_cc, staff):
    from integrations.services.quota import key_quota

    account = ConnectedAccountFactory()
    quota = key_quota(account.api_key)
    job = BulkJob.objects.create(
        account=account,
        list_id=LIST,
        state=JobState.PLANNED,
        phase=JobPhase.AWAITING_APPROVAL,
        plan={"strategy": "batches", "calls_after_export": 3, "planning_calls": 4},
        calls_planned=7,
    )
    page = staff.get(reverse("integrations:job_detail", args=[job.pk])).content.decode()
    note = html.unescape(_text(page, "plan-budget-note"))
    reserve = quota.per_day - quota.background_per_day
    assert f"{quota.background_per_day:,} of this key's {quota.per_day:,} calls a day" in note
    assert f"The other {reserve:,} (5%)" in note


# --- the progress bar and the clock -----------------------------------------------------------
def _running_job(**fields) -> BulkJob:
    started = timezone.now() - dt.timedelta(minutes=2)
    values = {
        "account": ConnectedAccountFactory(),
        "list_id": LIST,
        "state": JobState.RUNNING,
        "phase": JobPhase.WAIT_ALL,
        "started_at": started,
        "plan": {"strategy": "batches", "import_calls": 1, "removal_calls": 1},
        "checkpoint": {
            "activities": [
                {"id": "i1", "kind": "import", "state": "processing", "percent": 60},
                {"id": "r1", "kind": "remove", "state": "completed", "percent": 100},
            ]
        },
        # Measured a moment ago: 80% in 115 s, so about 29 s in all are left from then.
        "progress": {"updated": started.timestamp() + 115, "cc_state": "processing"},
        "calls_planned": 6,
    }
    return BulkJob.objects.create(**{**values, **fields})


def test_the_job_page_renders_a_labelled_progress_bar_in_a_live_region(staff):
    job = _running_job()
    page = staff.get(reverse("integrations:job_progress", args=[job.pk])).content.decode()
    assert 'hx-get="' in page, "the region refreshes itself"
    region = re.search(r'<div id="job-progress"([^>]*)>(.*?)</div>', page, re.S)
    assert region and 'aria-live="polite"' in region.group(1)
    bar = re.search(r"<progress([^>]*)>", region.group(2)).group(1)
    assert 'max="100"' in bar and 'value="80"' in bar  # (1 + 60/100) of 2 activities
    assert 'aria-labelledby="job-progress-label"' in bar
    assert 'aria-describedby="job-progress-time"' in bar
    assert _text(page, "job-progress-label") == "Sync progress"
    assert _text(page, "job-percent") == "80%"
    assert _text(page, "job-elapsed").startswith("2 min")
    assert re.fullmatch(r"about \d+ s left", _text(page, "job-time-left"))


def test_a_run_with_nothing_measured_yet_says_estimating(staff):
    job = _running_job(phase=JobPhase.SUBMIT, checkpoint={})
    page = staff.get(reverse("integrations:job_progress", args=[job.pk])).content.decode()
    assert re.search(r'<progress[^>]*value="0"', page)
    assert _text(page, "job-time-left") == "estimating…"


def test_a_finished_job_shows_when_it_finished_and_how_long_it_took(staff):
    job = _running_job()
    finished = job.started_at + dt.timedelta(minutes=2, seconds=14)
    BulkJob.objects.filter(pk=job.pk).update(
        state=JobState.COMPLETED, phase=JobPhase.DONE, finished_at=finished
    )
    page = staff.get(reverse("integrations:job_detail", args=[job.pk])).content.decode()
    stamp = finished.isoformat()
    assert re.search(rf'<time id="job-finished" datetime="{re.escape(stamp)}"', page)
    assert _text(page, "job-duration") == "2 min 14 s"
    assert re.search(r'<progress[^>]*value="100"', page)
    assert "hx-get" not in page, "a finished job stops refreshing"

    listing = staff.get(reverse("integrations:job_list")).content.decode()
    row = re.search(rf'<tr id="job-row-{job.pk}">(.*?)</tr>', listing, re.S).group(1)
    assert f'<time class="job-finished" datetime="{stamp}"' in row
    assert ">2 min 14 s</td>" in row


def test_every_date_on_the_job_pages_is_a_time_element(staff):
    job = _running_job()
    BulkJob.objects.filter(pk=job.pk).update(
        state=JobState.COMPLETED, finished_at=job.started_at + dt.timedelta(seconds=5)
    )
    for url in (
        reverse("integrations:job_detail", args=[job.pk]),
        reverse("integrations:job_list"),
    ):
        page = staff.get(url).content.decode()
        text = re.sub(r"<time[^>]*>.*?</time>", "", page, flags=re.S)
        assert not re.search(r"\d{4}-\d{2}-\d{2}", text), url
        assert "ago</" not in text.replace("s ago</time>", ""), url


# --- the sync form ----------------------------------------------------------------------------
LISTS = [{"list_id": "list-1", "name": "Newsletter", "membership_count": 3}]


def test_the_sync_form_groups_its_choices_and_links_a_sample(staff, monkeypatch):
    monkeypatch.setattr("integrations.views.jobs.account_contact_lists", lambda **kwargs: LISTS)
    account = ConnectedAccountFactory()
    page = staff.get(reverse("integrations:sync_start", args=[account.pk, "list-1"]))
    form = page.content.decode()
    fieldset = re.search(r'<fieldset id="sync-mode"[^>]*>(.*?)</fieldset>', form, re.S).group(1)
    assert "<legend>" in fieldset
    assert fieldset.count('type="radio"') == 2 and 'name="mode"' in fieldset
    link = re.search(r'<a href="([^"]+)" id="sample-csv"[^>]*>([^<]+)</a>', form)
    assert link.group(1) == reverse("integrations:sync_sample_csv")
    assert link.group(2) == "Download a sample CSV"


def test_the_plans_strategy_choice_is_a_fieldset_with_a_legend(staff):
    job = BulkJob.objects.create(
        account=ConnectedAccountFactory(),
        list_id=LIST,
        state=JobState.PLANNED,
        plan={
            "strategy": "batches",
            "clear_offered": True,
            "planning_calls": 4,
            "calls_after_export": 40,
            "options": {
                "batches": {"calls_after_export": 40, "total_calls": 44},
                "clear_and_reimport": {"calls_after_export": 8, "total_calls": 12},
            },
        },
        calls_planned=44,
    )
    page = staff.get(reverse("integrations:job_detail", args=[job.pk])).content.decode()
    fieldset = re.search(r'<fieldset id="plan-strategy">(.*?)</fieldset>', page, re.S).group(1)
    assert "<legend>" in fieldset
    # Each choice says what the job would then plan, counted as the job counts it.
    assert "(44 calls)" in fieldset and "(12 calls)" in fieldset


def test_the_sample_csv_downloads_and_the_importer_takes_every_row(staff, tmp_path):
    response = staff.get(reverse("integrations:sync_sample_csv"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == 'attachment; filename="ccportal-sync-sample.csv"'
    path = tmp_path / "sample.csv"
    path.write_bytes(response.content)
    desired = desired_from_csv(path)
    assert desired.rejected == [] and desired.ignored_columns == []
    assert desired.rows_read == len(desired.contacts) == 3
    assert desired.columns == list(SAMPLE_COLUMNS)
    assert all(column_key(name) for name in desired.columns)
    assert desired.contacts["ada@example.com"]["birthday_month"] == "12"


@pytest.mark.parametrize(("groups", "status"), [([VIEWERS], 403), ([OPERATORS], 200)])
def test_the_sample_csv_needs_the_sync_forms_permission(db, groups, status):
    browser = Client()
    browser.force_login(PortalUserFactory(groups=groups))
    assert browser.get(reverse("integrations:sync_sample_csv")).status_code == status


def test_the_sample_csv_asks_an_anonymous_visitor_to_log_in(client, db):
    response = client.get(reverse("integrations:sync_sample_csv"))
    assert response.status_code == 302 and "/login/" in response.url

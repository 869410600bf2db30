"""Sync jobs as people use them: create, cancel, retry, what the progress and the rejected rows
say. Jobs run in this process against the sandbox (the runs through real workers are in
``test_bulk_runner.py``)."""

from __future__ import annotations

import random
import time

import pytest

from integrations.models import BulkJob, JobState
from integrations.services import bulk_jobs, bulk_runner
from integrations.services.bulk_files import JobFiles
from integrations.services.gateway import cc_client
from tests.integrations.services.bulk_support import (
    create_job,
    drive_inline,
    emails,
    job_get,
    members,
    seed_members,
    stats,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _garbage(size: int) -> bytes:
    return random.Random(1).randbytes(size)


# --- in this process ----------------------------------------------------------------------------
def test_cancel_at_planning_and_at_planned(sync_app):
    app = sync_app
    seed_members(app, 1, 11)
    waiting = create_job(app, emails(1, 5))
    assert bulk_jobs.bulk_job_cancel(job=waiting).state == JobState.CANCELLED
    assert stats(app).requests == 0

    planned = drive_inline(create_job(app, emails(1, 5)), approve=False)
    assert planned.state == JobState.PLANNED
    requests = stats(app).requests
    planned = bulk_jobs.bulk_job_cancel(job=planned)
    assert (planned.state, planned.error) == (JobState.CANCELLED, "Cancelled before it ran.")
    with pytest.raises(bulk_jobs.JobActionRefused, match="cancelled"):
        bulk_jobs.bulk_job_approve(allow_removals=True, job=planned)
    assert stats(app).requests == requests
    assert members(app) == set(emails(1, 11))


def test_cancel_requested_mid_planning_stops_before_the_next_step(sync_app):
    app = sync_app
    job = create_job(app, emails(1, 5))
    seen: list[str] = []

    def cancel_after_export(current: BulkJob) -> None:
        seen.append(current.phase)
        if current.phase == "export_wait" and len(seen) == 1:
            bulk_jobs.bulk_job_cancel(job=current)

    bulk_runner.bulk_job_advance(job_id=job.pk, on_progress=cancel_after_export, max_inline_wait=60)
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED
    assert "export_download" not in seen


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"name,phone\nAda,+1 555 0100\n", "no email column"),
        ("email,first_name\nzoë@example.com,Zoë\n".encode("latin-1"), "not UTF-8"),
        (_garbage(10 * 1024 * 1024), "not a text CSV file"),
        (b"email\n" + b"x" * (10 * 1024 * 1024), "does not look like a contact CSV file"),
        (b"", "empty"),
        (b"email\nAnn <ann@example.com>\nnot-an-email\n", "none of its 2 rows is usable"),
        (b"email,first_name\n", "has a header but no contacts, so the sync would remove every"),
        (b'email,"first\na@example.com,1\nb@example.com,2\n', "unclosed double quote"),
        (b'email,"' + b"x" * 200_000 + b'"\na@example.com,1\n', "header row is malformed"),
    ],
    ids=[
        "no-email-column",
        "latin-1",
        "10-MB-of-binary-garbage",
        "10-MB-text-line",
        "empty",
        "every-row-rejected",
        "header-only-would-empty-the-list",
        "header-with-open-quote",
        "header-field-over-the-csv-limit",
    ],
)
def test_bad_csv_sends_nothing_and_says_why_in_one_line(sync_app, body, message):
    app = sync_app
    with pytest.raises(bulk_jobs.BulkInputError) as caught:
        create_job(app, [], body=body)
    text = str(caught.value)
    assert message.lower() in text.lower()
    assert "\n" not in text and len(text) < 300
    assert not BulkJob.objects.exists()
    assert stats(app).requests == 0


def test_a_file_that_cannot_be_read_is_a_one_line_error_that_leaves_no_job(sync_app):
    def unreadable():
        yield b"email\n"
        raise PermissionError(13, "Permission denied")

    with pytest.raises(
        bulk_jobs.BulkInputError, match=r"could not be read or stored \(Permission denied\)"
    ):
        bulk_jobs.bulk_job_create(
            account=sync_app.account, list_id=sync_app.list_id, csv_chunks=unreadable()
        )
    assert not BulkJob.objects.exists()
    assert stats(sync_app).requests == 0


def test_formula_cells_are_neutralised_and_bad_rows_downloadable(sync_app):
    app = sync_app
    body = (
        b"email,first_name,last_name\n"
        b'ok@example.com,=HYPERLINK("http://x"),Plain\n'
        b"=cmd|'/c calc'!A1,Eve,Evil\n"
        b"not-an-email,Bob,Bad\n"
    )
    job = drive_inline(create_job(app, [], body=body))
    assert job.state == JobState.COMPLETED, job.error
    assert members(app) == {"ok@example.com"}
    assert job.result["rejected_input_rows"] == 2
    rejected = bulk_jobs.bulk_job_rejected_csv(job)
    assert rejected.splitlines()[0] == "rejected_by,line,email,reason"
    assert "'=cmd" in rejected and ",=cmd" not in rejected
    assert "not-an-email" in rejected
    client = cc_client(account=app.account)
    (contact,) = [c for c in client.contacts() if c["email_address"]["address"] == "ok@example.com"]
    assert contact["first_name"] == '\'=HYPERLINK("http://x")'


def test_retry_failed_rows_makes_an_add_job_of_the_rows_cc_rejected(sync_app):
    app = sync_app
    job = drive_inline(create_job(app, emails(1, 4)))
    with pytest.raises(bulk_jobs.JobActionRefused, match="no rows to retry"):
        bulk_jobs.bulk_job_retry_failed(job=job)
    # CC's own refusals (the sandbox's validation matches ours, so one is written here).
    JobFiles(job.pk).rejected("cc").write_text(
        "line,email,reason\n,late@example.com,import_data[0]: try again\n", encoding="utf-8"
    )
    retry = bulk_jobs.bulk_job_retry_failed(job=job)
    assert (retry.mode, retry.list_id, retry.state) == ("add", job.list_id, JobState.PLANNING)
    assert retry.plan["input"]["contacts"] == 1
    retry = drive_inline(retry)
    assert "late@example.com" in members(app)


def test_progress_is_honest_about_chunks_calls_and_staleness(sync_app):
    app = sync_app
    seed_members(app, 1, 11)
    snapshots: list[dict] = []
    job = create_job(app, emails(5, 16))
    bulk_runner.bulk_job_advance(job_id=job.pk, max_inline_wait=60)
    bulk_jobs.bulk_job_approve(allow_removals=True, job=job_get(job.pk))
    bulk_runner.bulk_job_advance(
        job_id=job.pk,
        on_progress=lambda j: snapshots.append(bulk_jobs.bulk_job_progress(j)),
        max_inline_wait=60,
    )
    labels = [s.get("phase_label") for s in snapshots]
    assert "Importing chunk 1 of 1" in labels
    assert any(s.get("cc_state") for s in snapshots)
    assert all(not s["stalled"] for s in snapshots)
    assert snapshots[-1]["percent"] == 100
    assert snapshots[-1]["calls_used"] <= snapshots[-1]["calls_planned"]

    running = job_get(job.pk)
    running.state = JobState.RUNNING
    running.progress = {**running.progress, "updated": time.time() - 3600}
    assert bulk_jobs.bulk_job_progress(running)["stalled"]


def test_an_account_at_its_daily_cap_pauses_the_job_until_the_reset(sync_app, settings):
    """The account may spend one more call today: the plan's export gets it, the job pauses
    naming the cap and the reset, and carries on once the cap allows it."""
    from integrations.services.budgets import account_budget_set
    from integrations.services.quota import quota_account_usage

    settings.CC_QUOTA_ACCOUNT_REFRESH = 0  # a changed cap is read on the next booking
    app = sync_app
    seed_members(app, 1, 11)
    booked = quota_account_usage(api_key=app.api_key)[app.account.pk]["booked"]
    account_budget_set(account=app.account, per_day=booked + 1)
    job = drive_inline(create_job(app, emails(5, 16)), approve=False)
    job.refresh_from_db()
    assert job.state == JobState.PAUSED, job.error
    assert f"daily cap of {booked + 1} calls" in job.error
    assert job.paused_until is not None and job.paused_until.hour == 0
    assert quota_account_usage(api_key=app.api_key)[app.account.pk]["booked"] == booked + 1

    account_budget_set(account=app.account, per_day=None)
    job = drive_inline(bulk_jobs.bulk_job_resume(job=job_get(job.pk)))
    assert job.state == JobState.COMPLETED, job.error
    assert members(app) == set(emails(5, 16))


def test_a_plan_counts_on_no_more_than_the_accounts_cap_leaves(sync_app, settings):
    from integrations.services.budgets import account_budget_set
    from integrations.services.quota import quota_account_usage

    settings.CC_QUOTA_ACCOUNT_REFRESH = 0
    app = sync_app
    seed_members(app, 1, 11)
    booked = quota_account_usage(api_key=app.api_key)[app.account.pk]["booked"]
    account_budget_set(account=app.account, per_day=booked + 30)
    job = drive_inline(create_job(app, emails(5, 16)), approve=False)
    assert job.state == JobState.PLANNED, job.error
    spent = quota_account_usage(api_key=app.api_key)[app.account.pk]["booked"] - booked
    # The key has thousands left today; the account's cap leaves 30 minus what planning spent.
    assert job.plan["remaining_today"] == 30 - spent

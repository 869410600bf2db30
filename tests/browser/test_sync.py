"""A person syncs a list from the browser: account page → Sync membership → upload a CSV →
the plan → Run → live progress until done, with a real worker process running the job."""

from __future__ import annotations

import pytest

from integrations.models import BulkJob, JobState

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _members(app) -> set[str]:
    return {m.email for m in app.sandbox.list_members(app.cc_account, app.list_id)}


def test_upload_plan_run_and_watch_progress_reach_done(
    logged_in_page, live_server, sync_app, worker, tmp_path
):
    app = sync_app
    # The list holds m1..m10; the file wants m6..m15 plus one malformed row.
    app.sandbox.seed_contacts(
        app.cc_account, count=10, start=1, list_ids=[app.list_id], email_template="m{n}@example.com"
    )
    desired = {f"m{n}@example.com" for n in range(6, 16)}
    upload = tmp_path / "members.csv"
    upload.write_text(
        "email,first_name\n"
        + "".join(f"{e},Member\n" for e in sorted(desired))
        + "not-an-email,X\n"
    )
    worker()
    page = logged_in_page

    page.goto(f"{live_server.url}/accounts/{app.account.pk}/")
    page.click("#sync-1")  # the account's first list, loaded by htmx
    page.wait_for_url(f"{live_server.url}/accounts/{app.account.pk}/lists/{app.list_id}/sync/")
    page.set_input_files("#id_csv_file", str(upload))
    page.check("input[name=mode][value=replace]")
    page.click("#make-plan")

    job = BulkJob.objects.get()
    page.wait_for_url(f"{live_server.url}/jobs/{job.pk}/")
    # The worker exports the list and plans; the page shows the plan live, then waits for Run.
    page.wait_for_selector("#job-run", timeout=30_000)
    assert page.inner_text("#plan-adds") == "5"
    assert page.inner_text("#plan-removes") == "5"
    assert int(page.inner_text("#plan-calls")) >= 2
    assert _members(app) == {f"m{n}@example.com" for n in range(1, 11)}, "nothing runs before Run"

    # Half the list goes: Run asks for the removals to be confirmed first.
    assert "removes 5 of the list's 10 members" in page.inner_text("#removal-warning")
    page.check("#confirm-removals")
    page.click("#job-run")
    page.wait_for_selector("#job-state[data-state=completed]", timeout=60_000)
    assert page.inner_text("#result-added") == "5"
    assert page.inner_text("#result-removed") == "5"
    assert "1 in the file" in page.inner_text("#job-result")
    assert BulkJob.objects.get().state == JobState.COMPLETED
    assert _members(app) == desired

    with page.expect_download() as download:
        page.click("text=Download rejected rows (CSV)")
    assert "not-an-email" in download.value.path().read_text()

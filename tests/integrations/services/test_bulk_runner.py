"""The list-membership sync end to end: the sandbox plays CC, a real ``db_worker`` runs jobs."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
from django.utils import timezone

from integrations.constant_contact.client import ConstantContact
from integrations.models import BulkJob, JobState
from integrations.services import bulk_jobs, bulk_runner
from integrations.tasks import bulk_job_enqueue
from tests.integrations.services.bulk_support import (
    IMPORT_POST,
    create_job,
    csv_body,
    drive_inline,
    emails,
    import_posts,
    job_get,
    members,
    seed_members,
    state_is,
    stats,
)
from tests.integrations.services.bulk_workers import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _planned_by_a_worker(app, worker) -> BulkJob:
    """m1..m20 in the list, m11..m30 desired (10 adds, 10 removes), planned by a real worker."""
    seed_members(app, 1, 21)
    job = create_job(app, emails(11, 31))
    worker()
    bulk_job_enqueue(job.pk)
    wait_for(state_is(job.pk, JobState.PLANNED), timeout=30, what="the plan")
    return job


def _paused_by_ccs_quota(app, worker) -> BulkJob:
    """A worker-planned job run when CC allows one more call today: the import gets through,
    the removal meets CC's quota_exceeded, and the job pauses."""
    job = _planned_by_a_worker(app, worker)
    app.sandbox.register_client(
        app.api_key.client_id,
        redirect_uris=["http://testserver/accounts/callback/"],
        client_secret="sandbox-secret-value-for-tests",
        refresh_mode="long_lived",
        per_day=stats(app).today_count + 1,
    )
    bulk_job_enqueue(bulk_jobs.bulk_job_approve(allow_removals=True, job=job_get(job.pk)).pk)
    wait_for(state_is(job.pk, JobState.PAUSED, JobState.FAILED), timeout=30, what="the pause")
    return job


# --- through a real worker ------------------------------------------------------------------
def test_replace_through_a_worker_makes_the_list_exactly_the_desired_set(sync_app, worker):
    app = sync_app
    seed_members(app, 1, 31)
    app.sandbox.seed_contacts(
        app.cc_account,
        contacts=[{"email": "gone@example.com", "permission_to_send": "unsubscribed"}],
    )
    desired = [*emails(11, 41), "gone@example.com"]
    job = create_job(app, desired)
    worker()
    bulk_job_enqueue(job.pk)
    wait_for(state_is(job.pk, JobState.PLANNED), timeout=30, what="the plan")
    job = bulk_jobs.bulk_job_approve(allow_removals=True, job=job_get(job.pk))
    bulk_job_enqueue(job.pk)
    wait_for(state_is(job.pk, *BulkJob.TERMINAL_STATES), timeout=30, what="the end")

    job = job_get(job.pk)
    assert job.state == JobState.COMPLETED, job.error
    assert members(app) == set(emails(11, 41))
    assert job.result == {
        "added": 10,
        "removed": 10,
        "unchanged": 20,
        "not_added_unsubscribed": 1,
        "rejected_input_rows": 0,
        "rejected_by_cc": 0,
        "failed_activities": 0,
    }
    assert import_posts(app) == job.plan["import_calls"] == 1
    assert job.calls_used == stats(app).requests
    assert job.calls_used <= job.calls_planned


def test_add_through_a_worker_adds_and_removes_nobody(sync_app, worker):
    app = sync_app
    seed_members(app, 1, 21)
    job = create_job(app, emails(15, 31), mode="add")
    worker()
    bulk_job_enqueue(job.pk)
    wait_for(state_is(job.pk, JobState.PLANNED), timeout=30, what="the plan")
    bulk_job_enqueue(bulk_jobs.bulk_job_approve(allow_removals=True, job=job_get(job.pk)).pk)
    wait_for(state_is(job.pk, *BulkJob.TERMINAL_STATES), timeout=30, what="the end")

    job = job_get(job.pk)
    assert job.state == JobState.COMPLETED, job.error
    assert members(app) == set(emails(1, 31))
    assert (job.result["added"], job.result["removed"], job.result["unchanged"]) == (10, 0, 6)


# Where a worker dies: in the middle of the call each step makes, held open at the sandbox
# until the kill. (method, path prefix, what the worker is doing.)
KILL_POINTS = [
    ("POST", "/v3/activities/contact_exports", "starting the export"),
    ("GET", "/v3/activities/", "polling the export"),
    ("GET", "/v3/contact_exports/", "downloading the export"),
    ("POST", "/v3/activities/contacts_json_import", "submitting the import"),
    ("POST", "/v3/activities/remove_list_memberships", "submitting a removal batch"),
    ("GET", "/v3/activities", "polling the import and the removal"),
]


def _held_or_approved(app, job_pk: int) -> bool:
    """True once the worker's call is held at the sandbox; approves a plan that is waiting."""
    if not app.sandbox.faults()["api"]:
        return True
    if job_get(job_pk).state == JobState.PLANNED:  # the user approves the plan
        bulk_job_enqueue(bulk_jobs.bulk_job_approve(allow_removals=True, job=job_get(job_pk)).pk)
    return False


def test_a_worker_killed_inside_each_step_leaves_the_exact_list_and_applies_nothing_twice(
    sync_app, worker, settings
):
    """SIGKILL the worker while it is inside each step's call to CC, one step after another,
    and start a new one each time: the job completes, the list is exactly the desired set,
    and CC applied every import and removal once. Which step each kill hits is decided by the
    test (the call is held at the sandbox until the kill), not by timing."""
    app = sync_app
    settings.CC_BULK_LEASE_SECONDS = 1.0
    seed_members(app, 1, 41)
    desired = emails(11, 61)  # keeps 30, adds 20, removes 10
    job = create_job(app, desired)
    client_id = app.api_key.client_id
    bulk_job_enqueue(job.pk)
    for method, path, doing in KILL_POINTS:
        app.sandbox.inject_api_fault(
            "timeout", client_id=client_id, method=method, path=path, hold_seconds=60
        )
        current = worker()
        wait_for(lambda: _held_or_approved(app, job.pk), timeout=30, what=f"the worker {doing}")
        current.kill()
        app.sandbox.clear_faults()
        assert not job_get(job.pk).is_finished, f"the job ended while {doing}"
    worker()
    wait_for(
        state_is(job.pk, JobState.PLANNED, *BulkJob.TERMINAL_STATES), timeout=30, what="the job"
    )
    job = job_get(job.pk)
    assert job.state == JobState.COMPLETED, job.error
    assert members(app) == set(desired)
    by_path = stats(app).by_path
    applied = {
        path: by_path.get(path, {}).get("201", 0)
        for path in (IMPORT_POST, "POST /v3/activities/remove_list_memberships")
    }
    assert applied == {
        IMPORT_POST: job.plan["import_calls"],
        "POST /v3/activities/remove_list_memberships": job.plan["removal_calls"],
    }


def test_a_crash_between_cc_accepting_an_import_and_the_checkpoint_does_not_repeat_it(
    sync_app, monkeypatch
):
    app = sync_app
    seed_members(app, 1, 11)
    job = drive_inline(create_job(app, emails(5, 21)), approve=False)
    bulk_jobs.bulk_job_approve(allow_removals=True, job=job)
    real_import = ConstantContact.contacts_json_import

    def import_then_die(self, **kwargs):
        real_import(self, **kwargs)
        raise SystemExit("the worker died before storing the activity id")

    monkeypatch.setattr(ConstantContact, "contacts_json_import", import_then_die)
    with pytest.raises(SystemExit):
        bulk_runner.bulk_job_advance(job_id=job.pk, max_inline_wait=60)
    monkeypatch.setattr(ConstantContact, "contacts_json_import", real_import)
    # A SIGKILLed worker runs no finally block: its lease stays until it expires.
    BulkJob.objects.filter(pk=job.pk).update(
        lease_owner="dead-worker", lease_expires_at=timezone.now() + dt.timedelta(seconds=60)
    )
    assert bulk_runner.bulk_job_advance(job_id=job.pk).state == JobState.RUNNING
    assert job.pk not in bulk_jobs.bulk_jobs_recoverable()
    BulkJob.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now())
    assert job.pk in bulk_jobs.bulk_jobs_recoverable()

    bulk_runner.bulk_job_advance(job_id=job.pk, max_inline_wait=60)
    job.refresh_from_db()
    assert job.state == JobState.COMPLETED, job.error
    # The next worker finds the import in CC's activity list instead of sending it again.
    assert import_posts(app) == 1
    assert app.sandbox.activities(app.cc_account)["duplicates"] == 0
    assert members(app) == set(emails(5, 21))


def test_an_import_and_a_removal_whose_answers_timed_out_are_applied_once(sync_app, settings):
    """CC applies the import and the removal, then holds the answers past the read timeout:
    the job finds both in CC's activity list, completes, and nothing is applied twice."""
    app = sync_app
    settings.CC_API_READ_TIMEOUT = 0.5
    seed_members(app, 1, 11)
    job = drive_inline(create_job(app, emails(5, 21)), approve=False)
    bulk_jobs.bulk_job_approve(allow_removals=True, job=job)
    for path in (IMPORT_POST, "POST /v3/activities/remove_list_memberships"):
        app.sandbox.inject_api_fault(
            "timeout",
            client_id=app.api_key.client_id,
            method="POST",
            path=path.split(" ", 1)[1],
            hold_seconds=3,
            applied_first=True,
        )
    bulk_runner.bulk_job_advance(job_id=job.pk, max_inline_wait=60)
    job.refresh_from_db()
    assert job.state == JobState.COMPLETED, job.error
    assert members(app) == set(emails(5, 21))
    assert app.sandbox.injected() == {"api:timeout": 2}
    assert import_posts(app) == 1
    assert app.sandbox.activities(app.cc_account)["duplicates"] == 0


def test_quota_exhaustion_pauses_and_resumes_after_cc_midnight(sync_app, worker):
    app = sync_app
    job = _paused_by_ccs_quota(app, worker)

    job = job_get(job.pk)
    assert job.state == JobState.PAUSED, job.error
    assert job.paused_until is not None
    assert "quota" in bulk_jobs.bulk_job_progress(job)["phase_label"]
    assert stats(app).quota_exceeded == 1

    # CC's day rolls over (the sandbox clock passes midnight); ours has not: resuming lifts
    # the key's local stop, and the job finishes.
    now = app.sandbox.now()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    app.sandbox.advance_clock((midnight - now).total_seconds() + 86_400 + 60)
    bulk_job_enqueue(bulk_jobs.bulk_job_resume(job=job).pk)
    wait_for(state_is(job.pk, *BulkJob.TERMINAL_STATES), timeout=30, what="the end")
    job = job_get(job.pk)
    assert job.state == JobState.COMPLETED, job.error
    assert members(app) == set(emails(11, 31))


def test_a_paused_job_continues_by_itself_when_the_day_turns(sync_app, worker):
    """No one presses Resume: at 00:00 UTC the key's stop lapses and the task parked until the
    reset comes due, so the worker carries on. Both clocks are moved by hand: the sandbox's
    past midnight, and ours by lapsing what midnight lapses."""
    from django_tasks.base import TaskResultStatus
    from django_tasks_db.models import DBTaskResult

    from integrations.services.quota import quota_resume

    app = sync_app
    job = _paused_by_ccs_quota(app, worker)
    parked = DBTaskResult.objects.filter(
        task_path__endswith="bulk_job_run_task",
        status=TaskResultStatus.READY,
        args_kwargs__args=[job.pk],
    )
    # The pause is saved before the task is parked again: wait for the parked task itself.
    wait_for(parked.exists, timeout=30, what="the parked task")
    assert parked.get().run_after >= job_get(job.pk).paused_until

    now = app.sandbox.now()
    app.sandbox.advance_clock(86_400 - (now.hour * 3600 + now.minute * 60 + now.second) + 60)
    quota_resume(api_key=app.api_key)
    BulkJob.objects.filter(pk=job.pk).update(paused_until=timezone.now())
    parked.update(run_after=timezone.now())
    wait_for(state_is(job.pk, *BulkJob.TERMINAL_STATES), timeout=30, what="the end")
    assert job_get(job.pk).state == JobState.COMPLETED, job_get(job.pk).error
    assert members(app) == set(emails(11, 31))


def test_a_job_scheduled_for_later_waits_for_its_time(sync_app, worker):
    app = sync_app
    job = _planned_by_a_worker(app, worker)
    run_after = timezone.now() + dt.timedelta(seconds=3)
    bulk_job_enqueue(
        bulk_jobs.bulk_job_approve(
            allow_removals=True, job=job_get(job.pk), run_after=run_after
        ).pk,
        run_after=run_after,
    )
    time.sleep(1.5)
    assert job_get(job.pk).state == JobState.QUEUED
    assert import_posts(app) == 0
    wait_for(state_is(job.pk, *BulkJob.TERMINAL_STATES), timeout=30, what="the end")
    job = job_get(job.pk)
    assert job.state == JobState.COMPLETED, job.error
    assert job.started_at >= run_after
    assert members(app) == set(emails(11, 31))


def test_cancel_while_running_stops_the_worker_and_names_work_left_at_cc(sync_app, worker):
    app = sync_app
    job = _planned_by_a_worker(app, worker)
    app.sandbox.set_options(activity_items_per_second=2)  # 10 items: 5 s at CC
    bulk_job_enqueue(bulk_jobs.bulk_job_approve(allow_removals=True, job=job_get(job.pk)).pk)
    wait_for(lambda: job_get(job.pk).phase == "wait_all", timeout=30, what="the wait")
    bulk_jobs.bulk_job_cancel(job=job_get(job.pk))
    wait_for(state_is(job.pk, *BulkJob.TERMINAL_STATES), timeout=10, what="the cancel")
    job = job_get(job.pk)
    assert job.state == JobState.CANCELLED
    assert "activities already accepted by CC will still complete there" in job.error


def test_a_list_is_cleared_and_reimported_only_when_the_person_chooses_it(sync_app):
    """10,000 of 10,020 members go: removing them takes 20 batches, so clearing and
    re-importing is offered, and runs only when chosen."""
    app = sync_app
    seed_members(app, 1, 10_021)
    job = drive_inline(create_job(app, emails(10_001, 10_031)), approve=False)
    assert job.plan["strategy"] == "batches" and job.plan["clear_offered"]
    bulk_jobs.bulk_job_approve(job=job, strategy="clear_and_reimport", allow_removals=True)
    job = drive_inline(job)
    assert job.state == JobState.COMPLETED, job.error
    assert members(app) == set(emails(10_001, 10_031))
    assert (job.result["added"], job.result["removed"]) == (10, 10_000)
    by_path = stats(app).by_path
    assert sum(by_path["POST /v3/activities/remove_list_memberships"].values()) == 1


def test_600_removals_go_in_batches_of_500_polled_together_with_the_import(sync_app):
    """600 to remove and 100 to add: one wave of an import and two removal batches (CC takes
    at most 500 contact ids a call), whose progress one GET /v3/activities covers."""
    app = sync_app
    app.sandbox.set_options(activity_items_per_second=400)  # the wave takes about 1.5 s
    seed_members(app, 1, 701)
    desired = emails(601, 801)
    job = drive_inline(create_job(app, desired))
    assert job.state == JobState.COMPLETED, job.error
    assert job.plan["strategy"] == "batches"
    assert (job.plan["import_calls"], job.plan["removal_calls"]) == (1, 2)
    assert members(app) == set(desired)
    by_path = stats(app).by_path
    assert sum(by_path["POST /v3/activities/remove_list_memberships"].values()) == 2
    assert sum(by_path.get("GET /v3/activities", {}).values()) >= 1
    assert job.result["removed"] == 600 and job.result["added"] == 100


def test_40001_rows_are_imported_in_two_chunks(sync_app):
    app = sync_app
    job = drive_inline(create_job(app, emails(1, 40_002)))
    assert job.state == JobState.COMPLETED, job.error
    assert job.plan["import_calls"] == 2
    assert import_posts(app) == 2
    assert len(members(app)) == 40_001
    assert job.result["added"] == 40_001


def test_a_step_that_cannot_succeed_fails_the_job_once_and_says_why(sync_app):
    """The desired file vanishes between plan and run (a disk error, workers on hosts that do
    not share MEDIA_ROOT): the job fails with the reason instead of being retried forever."""
    app = sync_app
    seed_members(app, 1, 5)
    job = drive_inline(create_job(app, emails(3, 9)), approve=False)
    assert job.state == JobState.PLANNED
    Path(job.source_file).unlink()
    job = drive_inline(bulk_jobs.bulk_job_approve(allow_removals=True, job=job))
    assert job.state == JobState.FAILED
    assert "unexpected error in step submit" in job.error
    assert "FileNotFoundError" in job.error or "CsvRejected" in job.error
    assert job.pk not in bulk_jobs.bulk_jobs_recoverable()
    assert import_posts(app) == 0
    assert members(app) == set(emails(1, 5))


def test_source_list_sync_copies_another_lists_members(sync_app):
    app = sync_app
    seed_members(app, 1, 11)
    source = app.lists[1].list_id
    app.sandbox.seed_contacts(
        app.cc_account, count=8, start=5, list_ids=[source], email_template="m{n}@example.com"
    )
    # CC keeps addresses of up to 80 characters; its JSON import takes 50.
    long_local = "a-member-whose-address-is-too-long-for-the-json-import"
    app.sandbox.seed_contacts(
        app.cc_account, count=1, list_ids=[source], email_template=long_local + "{n}@example.com"
    )
    job = bulk_jobs.bulk_job_create(account=app.account, list_id=app.list_id, source_list_id=source)
    job = drive_inline(job)
    assert job.state == JobState.COMPLETED, job.error
    assert members(app) == set(emails(5, 13))
    assert job.plan["input"]["contacts"] == 8
    assert job.plan["input"]["rejected"] == 1
    assert long_local in bulk_jobs.bulk_job_rejected_csv(job)


def test_the_portal_runs_a_sync_through_its_worker(sync_app, worker, staff_client):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.urls import reverse

    app = sync_app
    seed_members(app, 1, 11)
    upload = SimpleUploadedFile("members.csv", csv_body([*emails(6, 16), "bad-address"]))
    worker()
    response = staff_client.post(
        reverse("integrations:sync_start", args=[app.account.pk, app.list_id]),
        {"csv_file": upload, "mode": "replace", "source_list_id": ""},
    )
    job = BulkJob.objects.get()
    assert response.status_code == 302 and response.url.endswith(f"/jobs/{job.pk}/")
    wait_for(state_is(job.pk, JobState.PLANNED), timeout=30, what="the plan")
    page = staff_client.get(reverse("integrations:job_detail", args=[job.pk])).content.decode()
    assert 'id="job-run"' in page and 'id="plan-calls"' in page

    staff_client.post(
        reverse("integrations:job_action", args=[job.pk, "run"]), {"confirm_removals": "yes"}
    )
    wait_for(state_is(job.pk, *BulkJob.TERMINAL_STATES), timeout=30, what="the end")
    body = staff_client.get(reverse("integrations:job_progress", args=[job.pk])).content.decode()
    assert 'id="result-added">5<' in body and 'id="result-removed">5<' in body
    assert members(app) == set(emails(6, 16))
    rejected = staff_client.get(reverse("integrations:job_rejected_csv", args=[job.pk]))
    assert rejected["Content-Type"].startswith("text/csv")
    assert "bad-address" in rejected.content.decode()

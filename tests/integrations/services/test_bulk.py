"""The list-membership sync end to end: the sandbox plays CC, a real ``db_worker`` runs jobs."""

from __future__ import annotations

import datetime as dt
import os
import random
import time
from pathlib import Path

import pytest
from django.utils import timezone

from integrations.constant_contact.client import ConstantContact
from integrations.models import BulkJob, JobState
from integrations.services import bulk
from integrations.services.gateway import cc_client
from integrations.tasks import bulk_job_enqueue
from tests.integrations.services.bulk_workers import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

IMPORT_POST = "POST /v3/activities/contacts_json_import"


def _csv(emails, *, header: str = "email,first_name") -> bytes:
    return (header + "\n" + "".join(f"{e},Name {i}\n" for i, e in enumerate(emails))).encode()


def _emails(start: int, stop: int) -> list[str]:
    return [f"m{n}@example.com" for n in range(start, stop)]


def _seed_members(app, start: int, stop: int) -> None:
    app.sandbox.seed_contacts(
        app.cc_account,
        count=stop - start,
        start=start,
        list_ids=[app.list_id],
        email_template="m{n}@example.com",
    )


def _members(app) -> set[str]:
    return {m.email for m in app.sandbox.list_members(app.cc_account, app.list_id)}


def _stats(app):
    return app.sandbox.stats(app.api_key.client_id)


def _import_posts(app) -> int:
    return sum(_stats(app).by_path.get(IMPORT_POST, {}).values())


def _job(pk: int) -> BulkJob:
    return BulkJob.objects.get(pk=pk)


def _state_is(pk: int, *states: str):
    return lambda: _job(pk).state in states


def _create(app, emails, *, mode: str = "replace", body: bytes | None = None) -> BulkJob:
    return bulk.bulk_job_create(
        account=app.account,
        list_id=app.list_id,
        mode=mode,
        csv_chunks=iter([body if body is not None else _csv(emails)]),
    )


def _planned_by_a_worker(app, worker) -> BulkJob:
    """m1..m20 in the list, m11..m30 desired (10 adds, 10 removes), planned by a real worker."""
    _seed_members(app, 1, 21)
    job = _create(app, _emails(11, 31))
    worker()
    bulk_job_enqueue(job.pk)
    wait_for(_state_is(job.pk, JobState.PLANNED), timeout=30, what="the plan")
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
        per_day=_stats(app).today_count + 1,
    )
    bulk_job_enqueue(bulk.bulk_job_approve(job=_job(job.pk)).pk)
    wait_for(_state_is(job.pk, JobState.PAUSED, JobState.FAILED), timeout=30, what="the pause")
    return job


def _drive_inline(job: BulkJob, *, approve: bool = True) -> BulkJob:
    """Run a job in this process, as the CLI does."""
    bulk.bulk_job_advance(job_id=job.pk, max_inline_wait=60)
    job.refresh_from_db()
    if approve and job.state == JobState.PLANNED:
        bulk.bulk_job_approve(job=job)
        bulk.bulk_job_advance(job_id=job.pk, max_inline_wait=60)
        job.refresh_from_db()
    return job


# --- through a real worker ------------------------------------------------------------------
def test_replace_through_a_worker_makes_the_list_exactly_the_desired_set(sync_app, worker):
    app = sync_app
    _seed_members(app, 1, 31)
    app.sandbox.seed_contacts(
        app.cc_account,
        contacts=[{"email": "gone@example.com", "permission_to_send": "unsubscribed"}],
    )
    desired = [*_emails(11, 41), "gone@example.com"]
    job = _create(app, desired)
    worker()
    bulk_job_enqueue(job.pk)
    wait_for(_state_is(job.pk, JobState.PLANNED), timeout=30, what="the plan")
    job = bulk.bulk_job_approve(job=_job(job.pk))
    bulk_job_enqueue(job.pk)
    wait_for(_state_is(job.pk, *BulkJob.TERMINAL_STATES), timeout=30, what="the end")

    job = _job(job.pk)
    assert job.state == JobState.COMPLETED, job.error
    assert _members(app) == set(_emails(11, 41))
    assert job.result == {
        "added": 10,
        "removed": 10,
        "unchanged": 20,
        "not_added_unsubscribed": 1,
        "rejected_input_rows": 0,
        "rejected_by_cc": 0,
        "failed_activities": 0,
    }
    assert _import_posts(app) == job.plan["import_calls"] == 1
    assert job.calls_used == _stats(app).requests
    assert job.calls_used <= job.calls_planned


def test_add_through_a_worker_adds_and_removes_nobody(sync_app, worker):
    app = sync_app
    _seed_members(app, 1, 21)
    job = _create(app, _emails(15, 31), mode="add")
    worker()
    bulk_job_enqueue(job.pk)
    wait_for(_state_is(job.pk, JobState.PLANNED), timeout=30, what="the plan")
    bulk_job_enqueue(bulk.bulk_job_approve(job=_job(job.pk)).pk)
    wait_for(_state_is(job.pk, *BulkJob.TERMINAL_STATES), timeout=30, what="the end")

    job = _job(job.pk)
    assert job.state == JobState.COMPLETED, job.error
    assert _members(app) == set(_emails(1, 31))
    assert (job.result["added"], job.result["removed"], job.result["unchanged"]) == (10, 0, 6)


def test_workers_killed_at_random_steps_still_leave_the_exact_list(sync_app, worker, settings):
    """SIGKILL the worker at a random moment of a step, start a new one, again and again: every
    job still ends with exactly the desired list, and an import is repeated at most once per
    kill (the one step a kill may interrupt between CC's answer and our checkpoint)."""
    app = sync_app
    settings.CC_BULK_LEASE_SECONDS = 1.0
    # Activities of 0.1-0.4 s and 4 calls/s: a job's steps spread over about 4 s.
    app.sandbox.set_options(activity_items_per_second=100)
    rng = random.Random(int(os.environ.get("BULK_KILL_SEED", "6")))
    kills, phases_killed, repeats = 0, set(), 0
    jobs = 0
    while kills < 22:
        jobs += 1
        # A fresh list each round: 40 members; the desired set keeps 30 and adds 20.
        base = jobs * 100
        app.list_id = app.sandbox.seed_list(app.cc_account, f"Killed {jobs}").list_id
        _seed_members(app, base, base + 40)
        desired = _emails(base + 10, base + 60)
        imports_before = _import_posts(app)
        job = _create(app, desired)
        bulk_job_enqueue(job.pk)
        job_kills = 0
        while job_kills < 5 and not _job(job.pk).is_finished:
            current = worker()
            held = wait_for(
                lambda pk=job.pk: _job(pk).lease_owner or _job(pk).state == JobState.PLANNED,
                timeout=15,
                what="a worker to take the job",
            )
            if _job(job.pk).state == JobState.PLANNED:  # the user approves the plan
                bulk_job_enqueue(bulk.bulk_job_approve(job=_job(job.pk)).pk)
                continue
            assert held
            time.sleep(rng.uniform(0.0, 1.2))
            phases_killed.add(_job(job.pk).phase)
            current.kill()
            kills += 1
            job_kills += 1
            if job_kills % 2:
                bulk_job_enqueue(job.pk)  # a fresh enqueue; otherwise the watchdog recovers it
        worker()
        for _ in range(2):
            wait_for(
                _state_is(job.pk, JobState.PLANNED, *BulkJob.TERMINAL_STATES),
                timeout=20,
                what="the job to move on",
            )
            if _job(job.pk).state == JobState.PLANNED:
                bulk_job_enqueue(bulk.bulk_job_approve(job=_job(job.pk)).pk)

        job = _job(job.pk)
        assert job.state == JobState.COMPLETED, job.error
        assert _members(app) == set(desired), f"job {job.pk}"
        imports = _import_posts(app) - imports_before
        assert job.plan["import_calls"] <= imports <= job.plan["import_calls"] + job_kills
        repeats += imports - job.plan["import_calls"]
    print(f"{kills} kills over {jobs} jobs; repeated imports: {repeats}; phases: {phases_killed}")
    assert kills >= 20
    working = {"export_start", "export_wait", "export_download", "diff", "submit", "wait_all"}
    assert len(phases_killed & working) >= 3, phases_killed


def test_a_crash_between_cc_accepting_an_import_and_the_checkpoint_repeats_it_once(
    sync_app, monkeypatch
):
    app = sync_app
    _seed_members(app, 1, 11)
    job = _drive_inline(_create(app, _emails(5, 21)), approve=False)
    bulk.bulk_job_approve(job=job)
    real_import = ConstantContact.contacts_json_import

    def import_then_die(self, **kwargs):
        real_import(self, **kwargs)
        raise SystemExit("the worker died before storing the activity id")

    monkeypatch.setattr(ConstantContact, "contacts_json_import", import_then_die)
    with pytest.raises(SystemExit):
        bulk.bulk_job_advance(job_id=job.pk, max_inline_wait=60)
    monkeypatch.setattr(ConstantContact, "contacts_json_import", real_import)
    # A SIGKILLed worker runs no finally block: its lease stays until it expires.
    BulkJob.objects.filter(pk=job.pk).update(
        lease_owner="dead-worker", lease_expires_at=timezone.now() + dt.timedelta(seconds=60)
    )
    assert bulk.bulk_job_advance(job_id=job.pk).state == JobState.RUNNING
    assert job.pk not in bulk.bulk_jobs_recoverable()
    BulkJob.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now())
    assert job.pk in bulk.bulk_jobs_recoverable()

    bulk.bulk_job_advance(job_id=job.pk, max_inline_wait=60)
    job.refresh_from_db()
    assert job.state == JobState.COMPLETED, job.error
    assert _import_posts(app) == 2  # the chunk, and its one idempotent repeat
    assert _members(app) == set(_emails(5, 21))


def test_quota_exhaustion_pauses_and_resumes_after_cc_midnight(sync_app, worker):
    app = sync_app
    job = _paused_by_ccs_quota(app, worker)

    job = _job(job.pk)
    assert job.state == JobState.PAUSED, job.error
    assert job.paused_until is not None
    assert "quota" in bulk.bulk_job_progress(job)["phase_label"]
    assert _stats(app).quota_exceeded == 1

    # CC's day rolls over (the sandbox clock passes midnight); ours has not: resuming lifts
    # the key's local stop, and the job finishes.
    now = app.sandbox.now()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    app.sandbox.advance_clock((midnight - now).total_seconds() + 86_400 + 60)
    bulk_job_enqueue(bulk.bulk_job_resume(job=job).pk)
    wait_for(_state_is(job.pk, *BulkJob.TERMINAL_STATES), timeout=30, what="the end")
    job = _job(job.pk)
    assert job.state == JobState.COMPLETED, job.error
    assert _members(app) == set(_emails(11, 31))


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
    assert parked.get().run_after >= _job(job.pk).paused_until

    now = app.sandbox.now()
    app.sandbox.advance_clock(86_400 - (now.hour * 3600 + now.minute * 60 + now.second) + 60)
    quota_resume(api_key=app.api_key)
    BulkJob.objects.filter(pk=job.pk).update(paused_until=timezone.now())
    parked.update(run_after=timezone.now())
    wait_for(_state_is(job.pk, *BulkJob.TERMINAL_STATES), timeout=30, what="the end")
    assert _job(job.pk).state == JobState.COMPLETED, _job(job.pk).error
    assert _members(app) == set(_emails(11, 31))


def test_a_job_scheduled_for_later_waits_for_its_time(sync_app, worker):
    app = sync_app
    job = _planned_by_a_worker(app, worker)
    run_after = timezone.now() + dt.timedelta(seconds=3)
    bulk_job_enqueue(
        bulk.bulk_job_approve(job=_job(job.pk), run_after=run_after).pk, run_after=run_after
    )
    time.sleep(1.5)
    assert _job(job.pk).state == JobState.QUEUED
    assert _import_posts(app) == 0
    wait_for(_state_is(job.pk, *BulkJob.TERMINAL_STATES), timeout=30, what="the end")
    job = _job(job.pk)
    assert job.state == JobState.COMPLETED, job.error
    assert job.started_at >= run_after
    assert _members(app) == set(_emails(11, 31))


def test_cancel_while_running_stops_the_worker_and_names_work_left_at_cc(sync_app, worker):
    app = sync_app
    job = _planned_by_a_worker(app, worker)
    app.sandbox.set_options(activity_items_per_second=2)  # 10 items: 5 s at CC
    bulk_job_enqueue(bulk.bulk_job_approve(job=_job(job.pk)).pk)
    wait_for(lambda: _job(job.pk).phase == "wait_all", timeout=30, what="the wait")
    bulk.bulk_job_cancel(job=_job(job.pk))
    wait_for(_state_is(job.pk, *BulkJob.TERMINAL_STATES), timeout=10, what="the cancel")
    job = _job(job.pk)
    assert job.state == JobState.CANCELLED
    assert "activities already accepted by CC will still complete there" in job.error


# --- in this process ----------------------------------------------------------------------------
def test_cancel_at_planning_and_at_planned(sync_app):
    app = sync_app
    _seed_members(app, 1, 11)
    waiting = _create(app, _emails(1, 5))
    assert bulk.bulk_job_cancel(job=waiting).state == JobState.CANCELLED
    assert _stats(app).requests == 0

    planned = _drive_inline(_create(app, _emails(1, 5)), approve=False)
    assert planned.state == JobState.PLANNED
    requests = _stats(app).requests
    planned = bulk.bulk_job_cancel(job=planned)
    assert (planned.state, planned.error) == (JobState.CANCELLED, "Cancelled before it ran.")
    with pytest.raises(bulk.BulkInputError, match="cancelled"):
        bulk.bulk_job_approve(job=planned)
    assert _stats(app).requests == requests
    assert _members(app) == set(_emails(1, 11))


def test_cancel_requested_mid_planning_stops_before_the_next_step(sync_app):
    app = sync_app
    job = _create(app, _emails(1, 5))
    seen: list[str] = []

    def cancel_after_export(current: BulkJob) -> None:
        seen.append(current.phase)
        if current.phase == "export_wait" and len(seen) == 1:
            bulk.bulk_job_cancel(job=current)

    bulk.bulk_job_advance(job_id=job.pk, on_progress=cancel_after_export, max_inline_wait=60)
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED
    assert "export_download" not in seen


def test_many_removals_clear_the_list_then_reimport(sync_app):
    app = sync_app
    _seed_members(app, 1, 2001)
    job = _drive_inline(_create(app, _emails(1990, 2011)))
    assert job.plan["strategy"] == "clear_and_reimport"
    assert job.state == JobState.COMPLETED, job.error
    assert _members(app) == set(_emails(1990, 2011))
    assert (job.result["added"], job.result["removed"]) == (10, 1989)


def test_600_removals_go_in_batches_of_500_polled_together_with_the_import(sync_app):
    """600 to remove and 100 to add: one wave of an import and two removal batches (CC takes
    at most 500 contact ids a call), whose progress one GET /v3/activities covers."""
    app = sync_app
    app.sandbox.set_options(activity_items_per_second=400)  # the wave takes about 1.5 s
    _seed_members(app, 1, 701)
    desired = _emails(601, 801)
    job = _drive_inline(_create(app, desired))
    assert job.state == JobState.COMPLETED, job.error
    assert job.plan["strategy"] == "batches"
    assert (job.plan["import_calls"], job.plan["removal_calls"]) == (1, 2)
    assert _members(app) == set(desired)
    by_path = _stats(app).by_path
    assert sum(by_path["POST /v3/activities/remove_list_memberships"].values()) == 2
    assert sum(by_path.get("GET /v3/activities", {}).values()) >= 1
    assert job.result["removed"] == 600 and job.result["added"] == 100


def test_polls_start_at_about_2_s_and_back_off_to_30_s(sync_app, settings):
    settings.CC_BULK_FIRST_POLL_DELAY = 2.0
    settings.CC_BULK_MAX_POLL_DELAY = 30.0
    runner = bulk._JobRunner(_create(sync_app, _emails(1, 3)), owner="t", on_progress=None)
    started = time.time()
    runner._schedule_first_poll()
    assert runner.checkpoint["wait_until"] - started == pytest.approx(2.0, abs=0.1)
    # An activity CC reports no progress on: the geometric back-off alone.
    silent = [{"id": "a", "state": "processing", "percent": 0, "submitted_at": started}]
    delays = [round(runner._next_poll_delay(silent), 2) for _ in range(8)]
    assert delays == [3.2, 5.12, 8.19, 13.11, 20.97, 30.0, 30.0, 30.0]
    # Half done after 40 s: CC's own pace says 40 s more; the wait is capped at 30 s, and a
    # nearly finished one is polled again soon, not after the back-off's 30 s.
    runner.checkpoint["poll_delay"] = 2.0
    half = [{"id": "a", "state": "processing", "percent": 50, "submitted_at": started - 40}]
    assert runner._next_poll_delay(half) == 30.0
    runner.checkpoint["poll_delay"] = 2.0
    nearly = [{"id": "a", "state": "processing", "percent": 95, "submitted_at": started - 19}]
    assert 2.0 <= runner._next_poll_delay(nearly) < 3.0


def test_40001_rows_are_imported_in_two_chunks(sync_app):
    app = sync_app
    job = _drive_inline(_create(app, _emails(1, 40_002)))
    assert job.state == JobState.COMPLETED, job.error
    assert job.plan["import_calls"] == 2
    assert _import_posts(app) == 2
    assert len(_members(app)) == 40_001
    assert job.result["added"] == 40_001


def _garbage(size: int) -> bytes:
    return random.Random(1).randbytes(size)


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
    with pytest.raises(bulk.BulkInputError) as caught:
        _create(app, [], body=body)
    text = str(caught.value)
    assert message.lower() in text.lower()
    assert "\n" not in text and len(text) < 300
    assert not BulkJob.objects.exists()
    assert _stats(app).requests == 0


def test_a_file_that_cannot_be_read_is_a_one_line_error_that_leaves_no_job(sync_app):
    def unreadable():
        yield b"email\n"
        raise PermissionError(13, "Permission denied")

    with pytest.raises(
        bulk.BulkInputError, match=r"could not be read or stored \(Permission denied\)"
    ):
        bulk.bulk_job_create(
            account=sync_app.account, list_id=sync_app.list_id, csv_chunks=unreadable()
        )
    assert not BulkJob.objects.exists()
    assert _stats(sync_app).requests == 0


def test_a_step_that_cannot_succeed_fails_the_job_once_and_says_why(sync_app):
    """The desired file vanishes between plan and run (a disk error, workers on hosts that do
    not share MEDIA_ROOT): the job fails with the reason instead of being retried forever."""
    app = sync_app
    _seed_members(app, 1, 5)
    job = _drive_inline(_create(app, _emails(3, 9)), approve=False)
    assert job.state == JobState.PLANNED
    Path(job.source_file).unlink()
    job = _drive_inline(bulk.bulk_job_approve(job=job))
    assert job.state == JobState.FAILED
    assert "unexpected error in step submit" in job.error
    assert "FileNotFoundError" in job.error or "CsvRejected" in job.error
    assert job.pk not in bulk.bulk_jobs_recoverable()
    assert _import_posts(app) == 0
    assert _members(app) == set(_emails(1, 5))


def test_formula_cells_are_neutralised_and_bad_rows_downloadable(sync_app):
    app = sync_app
    body = (
        b"email,first_name,last_name\n"
        b'ok@example.com,=HYPERLINK("http://x"),Plain\n'
        b"=cmd|'/c calc'!A1,Eve,Evil\n"
        b"not-an-email,Bob,Bad\n"
    )
    job = _drive_inline(_create(app, [], body=body))
    assert job.state == JobState.COMPLETED, job.error
    assert _members(app) == {"ok@example.com"}
    assert job.result["rejected_input_rows"] == 2
    rejected = bulk.bulk_job_rejected_csv(job)
    assert rejected.splitlines()[0] == "rejected_by,line,email,reason"
    assert "'=cmd" in rejected and ",=cmd" not in rejected
    assert "not-an-email" in rejected
    client = cc_client(account=app.account)
    (contact,) = [c for c in client.contacts() if c["email_address"]["address"] == "ok@example.com"]
    assert contact["first_name"] == '\'=HYPERLINK("http://x")'


def test_retry_failed_rows_makes_an_add_job_of_the_rows_cc_rejected(sync_app):
    app = sync_app
    job = _drive_inline(_create(app, _emails(1, 4)))
    with pytest.raises(bulk.BulkInputError, match="no rows to retry"):
        bulk.bulk_job_retry_failed(job=job)
    # CC's own refusals (the sandbox's validation matches ours, so one is written here).
    Path(bulk.job_dir(job) / "rejected_cc.csv").write_text(
        "line,email,reason\n,late@example.com,import_data[0]: try again\n", encoding="utf-8"
    )
    retry = bulk.bulk_job_retry_failed(job=job)
    assert (retry.mode, retry.list_id, retry.state) == ("add", job.list_id, JobState.PLANNING)
    assert retry.plan["input"]["contacts"] == 1
    retry = _drive_inline(retry)
    assert "late@example.com" in _members(app)


def test_progress_is_honest_about_chunks_calls_and_staleness(sync_app):
    app = sync_app
    _seed_members(app, 1, 11)
    snapshots: list[dict] = []
    job = _create(app, _emails(5, 16))
    bulk.bulk_job_advance(job_id=job.pk, max_inline_wait=60)
    bulk.bulk_job_approve(job=_job(job.pk))
    bulk.bulk_job_advance(
        job_id=job.pk,
        on_progress=lambda j: snapshots.append(bulk.bulk_job_progress(j)),
        max_inline_wait=60,
    )
    labels = [s.get("phase_label") for s in snapshots]
    assert "Importing chunk 1 of 1" in labels
    assert any(s.get("cc_state") for s in snapshots)
    assert all(not s["stalled"] for s in snapshots)
    assert snapshots[-1]["percent"] == 100
    assert snapshots[-1]["calls_used"] <= snapshots[-1]["calls_planned"]

    running = _job(job.pk)
    running.state = JobState.RUNNING
    running.progress = {**running.progress, "updated": time.time() - 3600}
    assert bulk.bulk_job_progress(running)["stalled"]


def test_source_list_sync_copies_another_lists_members(sync_app):
    app = sync_app
    _seed_members(app, 1, 11)
    source = app.lists[1].list_id
    app.sandbox.seed_contacts(
        app.cc_account, count=8, start=5, list_ids=[source], email_template="m{n}@example.com"
    )
    # CC keeps addresses of up to 80 characters; its JSON import takes 50.
    long_local = "a-member-whose-address-is-too-long-for-the-json-import"
    app.sandbox.seed_contacts(
        app.cc_account, count=1, list_ids=[source], email_template=long_local + "{n}@example.com"
    )
    job = bulk.bulk_job_create(account=app.account, list_id=app.list_id, source_list_id=source)
    job = _drive_inline(job)
    assert job.state == JobState.COMPLETED, job.error
    assert _members(app) == set(_emails(5, 13))
    assert job.plan["input"]["contacts"] == 8
    assert job.plan["input"]["rejected"] == 1
    assert long_local in bulk.bulk_job_rejected_csv(job)


def test_the_portal_runs_a_sync_through_its_worker(sync_app, worker, staff_client):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.urls import reverse

    app = sync_app
    _seed_members(app, 1, 11)
    upload = SimpleUploadedFile("members.csv", _csv([*_emails(6, 16), "bad-address"]))
    worker()
    response = staff_client.post(
        reverse("integrations:sync_start", args=[app.account.pk, app.list_id]),
        {"csv_file": upload, "mode": "replace", "source_list_id": ""},
    )
    job = BulkJob.objects.get()
    assert response.status_code == 302 and response.url.endswith(f"/jobs/{job.pk}/")
    wait_for(_state_is(job.pk, JobState.PLANNED), timeout=30, what="the plan")
    page = staff_client.get(reverse("integrations:job_detail", args=[job.pk])).content.decode()
    assert 'id="job-run"' in page and 'id="plan-calls"' in page

    staff_client.post(reverse("integrations:job_action", args=[job.pk, "run"]))
    wait_for(_state_is(job.pk, *BulkJob.TERMINAL_STATES), timeout=30, what="the end")
    body = staff_client.get(reverse("integrations:job_progress", args=[job.pk])).content.decode()
    assert 'id="result-added">5<' in body and 'id="result-removed">5<' in body
    assert _members(app) == set(_emails(6, 16))
    rejected = staff_client.get(reverse("integrations:job_rejected_csv", args=[job.pk]))
    assert rejected["Content-Type"].startswith("text/csv")
    assert "bad-address" in rejected.content.decode()

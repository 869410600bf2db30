"""The sync's steps and the runner's answer to each kind of trouble, against a scripted CC.

The sandbox makes most of these branches slow or impossible to reach on cue (a 503 at exactly
the export, an answer without an id); here a :class:`FakeSender` plays CC at the client seam,
so every test runs in this process in milliseconds. End-to-end truth stays in
``test_bulk_runner.py``, against the sandbox and real workers.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from django.utils import timezone

from integrations.constant_contact.errors import (
    CCActivityQueueFull,
    CCHTTPError,
    CCQuotaExceeded,
    CCServerError,
    CCTransportError,
)
from integrations.models import BulkJob, JobPhase, JobState
from integrations.services import bulk_runner
from integrations.services.bulk_files import JobFiles
from integrations.services.bulk_jobs import (
    JobActionRefused,
    bulk_job_approve,
    bulk_job_create,
    bulk_job_resume,
    bulk_jobs_recoverable,
)
from integrations.services.tokens import AccountNotConnected
from tests.factories import ConnectedAccountFactory

pytestmark = pytest.mark.django_db

LIST = str(uuid.uuid4())
MEMBER = str(uuid.uuid4())
EXPORT = "/activities/contact_exports"


@pytest.fixture(autouse=True)
def no_waits(settings):
    settings.CC_BULK_FIRST_POLL_DELAY = 0.0
    settings.CC_BULK_MAX_POLL_DELAY = 0.0


def _job(body: bytes = b"email\nnew@example.com\nkept@example.com\n") -> BulkJob:
    account = ConnectedAccountFactory()
    return bulk_job_create(account=account, list_id=LIST, csv_chunks=iter([body]))


def _advance(job: BulkJob) -> BulkJob:
    bulk_runner.bulk_job_advance(job_id=job.pk, max_inline_wait=0)
    job.refresh_from_db()
    return job


def _activity(activity_id: str, state: str = "initialized", **extra) -> dict:
    return {"activity_id": activity_id, "state": state, "percent_done": 0, **extra}


def _script_export(
    fake, *, members: str = f"kept@example.com,{uuid.uuid4()}\nold@example.com,{MEMBER}\n"
):
    fake.answer("POST", EXPORT, _activity("e1"))
    fake.answer("GET", "/activities/e1", _activity("e1", "completed", percent_done=100))
    fake.answer("GET", "/contact_exports/e1", "Email Address,Contact Id\n" + members)


def test_a_replace_sync_exports_plans_imports_removes_and_finishes(fake_cc):
    _script_export(fake_cc)
    job = _advance(_job())
    assert (job.state, job.phase) == (JobState.PLANNED, JobPhase.AWAITING_APPROVAL)
    assert (job.plan["adds"], job.plan["removes"], job.plan["unchanged"]) == (1, 1, 1)

    fake_cc.answer("POST", "/activities/contacts_json_import", _activity("i1"))
    fake_cc.answer("POST", "/activities/remove_list_memberships", _activity("r1"))
    fake_cc.answer(
        "GET",
        "/activities",
        {
            "activities": [
                _activity("i1", "completed", status={"cannot_add_to_list_count": 0}),
                _activity("r1", "completed"),
            ]
        },
    )
    # One of the list's two members goes: half the list, so the removal needs a person's word.
    assert job.plan["removals_need_confirmation"]
    with pytest.raises(JobActionRefused, match="Confirm the removals"):
        bulk_job_approve(job=job)
    job = _advance(bulk_job_approve(job=job, allow_removals=True))
    assert job.state == JobState.COMPLETED, job.error
    assert (job.result["added"], job.result["removed"]) == (1, 1)
    (imported,) = fake_cc.sent("POST", "/activities/contacts_json_import")
    assert json.loads(imported.data) == {
        "import_data": [{"email": "new@example.com"}],
        "list_ids": [LIST],
    }
    (removed,) = fake_cc.sent("POST", "/activities/remove_list_memberships")
    assert removed.json == {"source": {"contact_ids": [MEMBER]}, "list_ids": [LIST]}
    # Two activities at once: one GET /activities covers both.
    assert len(fake_cc.sent("GET", "/activities")) == 1


@pytest.mark.parametrize(
    "error",
    [
        CCServerError(status=503, method="POST", path=EXPORT, body=None),
        CCTransportError("No answer from Constant Contact"),
    ],
    ids=["503", "no-answer"],
)
def test_cc_failing_at_a_step_is_retried_with_backoff_then_pauses_the_job(fake_cc, error, settings):
    settings.CC_BULK_MAX_POLL_DELAY = 30.0
    fake_cc.answer("POST", EXPORT, raises=error)
    job = _job()
    for attempt in range(1, bulk_runner.MAX_STEP_FAILURES):
        job = _advance(job)
        assert (job.state, job.phase) == (JobState.PLANNING, JobPhase.EXPORT_START)
        assert job.checkpoint["failures"] == attempt
        assert "retrying" in job.progress["phase_label"]
        BulkJob.objects.filter(pk=job.pk).update(checkpoint={**job.checkpoint, "wait_until": 0})
    job = _advance(job)
    # Trouble that passes never ends a job: it pauses at its step and tries again by itself.
    assert (job.state, job.phase) == (JobState.PAUSED, JobPhase.EXPORT_START)
    assert f"Tried {bulk_runner.MAX_STEP_FAILURES} times" in job.error
    assert job.paused_until > timezone.now()
    assert job.pk not in bulk_jobs_recoverable()
    assert len(fake_cc.sent("POST", EXPORT)) == bulk_runner.MAX_STEP_FAILURES
    # Once the pause is over the watchdog hands it to a worker, which takes the step again.
    BulkJob.objects.filter(pk=job.pk).update(
        paused_until=timezone.now(), lease_expires_at=timezone.now()
    )
    assert job.pk in bulk_jobs_recoverable()
    fake_cc._answers.clear()  # CC answers again
    fake_cc.answer("POST", EXPORT, _activity("e1"))
    fake_cc.answer("GET", "/activities/e1", _activity("e1", "processing"))
    job = _advance(job)
    # It carries on planning where it paused: the state it paused from comes back.
    assert (job.state, job.phase) == (JobState.PLANNING, JobPhase.EXPORT_WAIT)


def test_a_retry_waits_longer_each_time(fake_cc, settings):
    settings.CC_BULK_MAX_POLL_DELAY = 30.0
    fake_cc.answer("POST", EXPORT, raises=CCTransportError("reset"))
    job = _job()
    waits = []
    for _ in range(3):
        before = timezone.now().timestamp()
        job = _advance(job)
        waits.append(round(job.checkpoint["wait_until"] - before))
        BulkJob.objects.filter(pk=job.pk).update(checkpoint={**job.checkpoint, "wait_until": 0})
    assert waits == [4, 8, 16]


def test_ccs_quota_pauses_the_job_until_the_reset(fake_cc):
    fake_cc.answer(
        "POST",
        EXPORT,
        raises=CCQuotaExceeded(
            status=429, method="POST", path=EXPORT, body={"error_key": "quota_exceeded"}
        ),
    )
    job = _advance(_job())
    assert job.state == JobState.PAUSED
    assert job.paused_until > timezone.now()
    assert "daily quota is spent" in job.progress["phase_label"]
    assert job.phase == JobPhase.EXPORT_START  # the step is taken again after the reset


def test_a_full_activity_queue_waits_a_minute(fake_cc):
    fake_cc.answer(
        "POST", EXPORT, raises=CCActivityQueueFull(status=429, method="POST", path=EXPORT)
    )
    job = _advance(_job())
    assert job.state == JobState.PLANNING
    wait = job.checkpoint["wait_until"] - timezone.now().timestamp()
    assert 55 < wait <= bulk_runner.ACTIVITY_QUEUE_WAIT_SECONDS
    assert "activity queue" in job.progress["phase_label"]


def test_an_account_that_needs_reconnecting_pauses_the_job_for_a_person(fake_cc):
    job = _job()
    fake_cc.answer("POST", EXPORT, raises=AccountNotConnected(job.account))
    job = _advance(job)
    assert (job.state, job.paused_until) == (JobState.PAUSED, None)
    assert "Reconnect the account, then press Resume" in job.error
    assert job.pk not in bulk_jobs_recoverable()  # nothing retries it behind the person's back


def test_a_request_cc_refuses_fails_the_job_with_ccs_reason(fake_cc):
    refusal = CCHTTPError(
        status=404,
        method="POST",
        path=EXPORT,
        body=[
            {
                "error_key": "not_found",
                "error_message": "list_ids contains a list_id that does not exist",
            }
        ],
    )
    fake_cc.answer("POST", EXPORT, raises=refusal)
    job = _advance(_job())
    assert job.state == JobState.FAILED
    assert "does not exist" in job.error


def test_an_answer_without_an_activity_id_is_trouble_at_cc_and_retried(fake_cc, settings):
    settings.CC_BULK_MAX_POLL_DELAY = 30.0
    fake_cc.answer("POST", EXPORT, {"state": "initialized"})
    job = _advance(_job())
    assert job.state == JobState.PLANNING
    assert "no activity_id" in job.progress["phase_label"]
    assert job.checkpoint["failures"] == 1


def test_a_step_that_cannot_succeed_fails_the_job_once(fake_cc, settings, tmp_path):
    job = _job()
    JobFiles(job.pk).desired.unlink()
    _script_export(fake_cc)
    job = _advance(job)
    assert job.state == JobState.FAILED
    assert "unexpected error in step diff" in job.error


def test_a_job_another_worker_holds_is_left_alone(fake_cc):
    job = _job()
    BulkJob.objects.filter(pk=job.pk).update(
        lease_owner="other-worker", lease_expires_at=timezone.now() + dt.timedelta(minutes=1)
    )
    outcome = bulk_runner.bulk_job_advance(job_id=job.pk, max_inline_wait=0)
    assert outcome.state == JobState.PLANNING
    assert fake_cc.calls == []


def test_a_worker_that_lost_its_lease_mid_step_stops_touching_the_job(fake_cc):
    job = _job()

    def taken_over(call):
        BulkJob.objects.filter(pk=job.pk).update(lease_owner="new-worker")
        return _activity("e1")

    fake_cc.answer("POST", EXPORT, taken_over)
    bulk_runner.bulk_job_advance(job_id=job.pk, max_inline_wait=0)
    job.refresh_from_db()
    assert job.lease_owner == "new-worker"
    assert job.phase == JobPhase.EXPORT_START  # the old worker wrote nothing after losing it


# --- what CC does with an activity ----------------------------------------------------------
@pytest.mark.parametrize("end_state", ["failed", "timed_out", "cancelled"])
def test_an_export_cc_did_not_finish_is_started_again(fake_cc, end_state):
    fake_cc.answer("POST", EXPORT, _activity("e0"), times=1)
    fake_cc.answer("GET", "/activities/e0", _activity("e0", end_state))
    _script_export(fake_cc)
    job = _advance(_job())
    assert job.state == JobState.PLANNED, job.error
    assert len(fake_cc.sent("POST", EXPORT)) == 2
    assert fake_cc.sent("GET", "/contact_exports/*")[0].path == "/contact_exports/e1"
    assert job.checkpoint["ended_badly"][0]["state"] == end_state


def _planned(fake_cc, *, members: str) -> BulkJob:
    _script_export(fake_cc, members=members)
    job = _advance(_job(b"email\nnew@example.com\nkept@example.com\n"))
    assert job.state == JobState.PLANNED
    return job


def test_only_the_import_cc_did_not_finish_is_sent_again(fake_cc):
    job = _planned(fake_cc, members="kept@example.com,c1\n")
    sent: list[str] = []

    def imported(call):
        sent.append(f"i{len(sent) + 1}")
        return _activity(sent[-1])

    fake_cc.answer("POST", "/activities/contacts_json_import", imported)
    fake_cc.answer("GET", "/activities/i1", _activity("i1", "failed"))
    fake_cc.answer("GET", "/activities/i2", _activity("i2", "completed"))
    job = _advance(bulk_job_approve(job=job))
    assert job.state == JobState.COMPLETED, job.error
    assert sent == ["i1", "i2"]
    assert job.result["added"] == 1


def test_an_activity_cc_keeps_failing_pauses_the_job_for_a_person(fake_cc):
    job = _planned(fake_cc, members="kept@example.com,c1\n")
    fake_cc.answer("POST", "/activities/contacts_json_import", _activity("i1"))
    fake_cc.answer("GET", "/activities/i1", _activity("i1", "timed_out"))
    job = _advance(bulk_job_approve(job=job))
    assert (job.state, job.paused_until) == (JobState.PAUSED, None)
    assert "timed out 3 times in a row" in job.error
    assert len(fake_cc.sent("POST", "/activities/contacts_json_import")) == 3
    # Resume sends it once more; this time CC finishes it.
    fake_cc._answers.clear()
    fake_cc.answer("POST", "/activities/contacts_json_import", _activity("i2"))
    fake_cc.answer("GET", "/activities/i2", _activity("i2", "completed"))
    job = _advance(bulk_job_resume(job=job))
    assert job.state == JobState.COMPLETED, job.error


def test_a_removal_cc_accepted_before_the_worker_died_is_not_sent_again(fake_cc):
    member = str(uuid.uuid4())
    job = _planned(fake_cc, members=f"kept@example.com,c1\ngone@example.com,{member}\n")
    fake_cc.answer("POST", "/activities/contacts_json_import", _activity("i1", "completed"))

    def accepted_then_died(call):
        raise SystemExit("the worker died after CC accepted the removal")

    fake_cc.answer("POST", "/activities/remove_list_memberships", accepted_then_died, times=1)
    job = bulk_job_approve(job=job, allow_removals=True)
    with pytest.raises(SystemExit):
        bulk_runner.bulk_job_advance(job_id=job.pk, max_inline_wait=0)
    # CC has the removal (it shows in its activity list); the next worker adopts it.
    accepted = _activity(
        "r1",
        "completed",
        created_at=timezone.now().isoformat(),
        status={"items_total_count": 1, "items_completed_count": 1, "list_count": 1},
    )
    fake_cc.answer("GET", "/activities", {"activities": [accepted, _activity("i1", "completed")]})
    BulkJob.objects.filter(pk=job.pk).update(lease_owner="", lease_expires_at=None)
    job = _advance(job)
    assert job.state == JobState.COMPLETED, job.error
    assert len(fake_cc.sent("POST", "/activities/remove_list_memberships")) == 1
    assert [a["id"] for a in job.checkpoint["activities"] if a["kind"] == "remove"] == ["r1"]


IMPORT = "/activities/contacts_json_import"


def _import_at_cc(activity_id: str, state: str = "completed", *, items: int = 1) -> dict:
    """An import as CC's activity list shows it (``ActivityImport``'s status)."""
    return _activity(
        activity_id,
        state,
        created_at=timezone.now().isoformat(),
        status={"items_total_count": items, "person_count": items, "error_count": 0},
    )


def test_an_import_whose_answer_was_lost_is_found_at_cc_and_not_sent_again(fake_cc):
    job = _planned(fake_cc, members="kept@example.com,c1\n")
    # CC applied the import, then the answer was lost (a read timeout).
    fake_cc.answer("POST", IMPORT, raises=CCTransportError("read timeout"), times=1)
    fake_cc.answer("GET", "/activities", {"activities": [_import_at_cc("i1")]})
    fake_cc.answer("GET", "/activities/i1", _import_at_cc("i1"))
    job = _advance(bulk_job_approve(job=job))
    BulkJob.objects.filter(pk=job.pk).update(checkpoint={**job.checkpoint, "wait_until": 0})
    job = _advance(job)
    assert job.state == JobState.COMPLETED, job.error
    assert len(fake_cc.sent("POST", IMPORT)) == 1
    assert [a["id"] for a in job.checkpoint["activities"]] == ["i1"]


def test_an_import_cc_never_received_is_sent_again(fake_cc):
    job = _planned(fake_cc, members="kept@example.com,c1\n")
    fake_cc.answer(
        "POST",
        IMPORT,
        raises=CCServerError(status=503, method="POST", path=IMPORT, body=None),
        times=1,
    )
    fake_cc.answer("POST", IMPORT, _import_at_cc("i2", "initialized"))
    fake_cc.answer("GET", "/activities", {"activities": []})
    fake_cc.answer("GET", "/activities/i2", _import_at_cc("i2"))
    job = _advance(bulk_job_approve(job=job))
    BulkJob.objects.filter(pk=job.pk).update(checkpoint={**job.checkpoint, "wait_until": 0})
    job = _advance(job)
    assert job.state == JobState.COMPLETED, job.error
    assert len(fake_cc.sent("POST", IMPORT)) == 2


def test_an_attempt_cc_ended_badly_is_never_taken_for_the_resend(fake_cc):
    """The first import ends failed; the resend's answer is lost. CC's list then shows the
    failed one (same size, just created): it is not the resend, which is sent again."""
    job = _planned(fake_cc, members="kept@example.com,c1\n")
    fake_cc.answer("POST", IMPORT, _import_at_cc("i1", "initialized"), times=1)
    fake_cc.answer("GET", "/activities/i1", _import_at_cc("i1", "failed"))
    fake_cc.answer("POST", IMPORT, raises=CCTransportError("read timeout"), times=1)
    fake_cc.answer("GET", "/activities", {"activities": [_import_at_cc("i1", "failed")]})
    fake_cc.answer("POST", IMPORT, _import_at_cc("i3", "initialized"))
    fake_cc.answer("GET", "/activities/i3", _import_at_cc("i3"))
    job = _advance(bulk_job_approve(job=job))
    BulkJob.objects.filter(pk=job.pk).update(checkpoint={**job.checkpoint, "wait_until": 0})
    job = _advance(job)
    assert job.state == JobState.COMPLETED, job.error
    assert len(fake_cc.sent("POST", IMPORT)) == 3
    assert [a["id"] for a in job.checkpoint["activities"]] == ["i3"]


def test_a_job_paused_by_repeated_trouble_resumes_after_cc_bulk_resume_after(fake_cc, settings):
    settings.CC_BULK_RESUME_AFTER = 7.0
    fake_cc.answer("POST", EXPORT, raises=CCTransportError("No answer from Constant Contact"))
    job = _job()
    for _ in range(bulk_runner.MAX_STEP_FAILURES):
        job = _advance(job)
        BulkJob.objects.filter(pk=job.pk).update(checkpoint={**job.checkpoint, "wait_until": 0})
    job.refresh_from_db()
    assert job.state == JobState.PAUSED
    wait = (job.paused_until - timezone.now()).total_seconds()
    assert 0 < wait <= 7.0


# --- emptying a list ------------------------------------------------------------------------
def _clearable(fake_cc, settings) -> BulkJob:
    """A replace that removes 10,000 of 10,001 members: 20 removal batches, so clearing and
    re-importing is offered (2 imports... here 1) and costs less."""
    settings.CC_SYNC_CONFIRM_REMOVAL_SHARE = 1.0
    members = "kept@example.com,c0\n" + "".join(
        f"m{n}@example.com,{uuid.uuid4()}\n" for n in range(10_000)
    )
    job = _planned(fake_cc, members=members)
    assert job.plan["clear_offered"] and job.plan["strategy"] == "batches"
    return job


def test_clearing_runs_only_when_chosen_and_the_days_budget_covers_the_reimport(fake_cc, settings):
    job = _clearable(fake_cc, settings)
    from integrations.services.quota import quota_reserve

    # Spend the key's background budget down to one call short of the re-import.
    needed = job.plan["options"]["clear_and_reimport"]["calls_after_export"]
    settings.CC_QUOTA_INTERACTIVE_RESERVE = 0.0
    key = job.account.api_key
    key.tier, key.custom_per_second, key.custom_per_day = "custom", 1000, needed + 1
    key.save()
    from integrations.services import quota as quota_service

    quota_service._policy.cache_clear()
    for _ in range(2):
        quota_reserve(api_key=key, lane="background")
    with pytest.raises(JobActionRefused, match="would sit incomplete"):
        bulk_job_approve(job=job, strategy="clear_and_reimport")
    assert fake_cc.sent("POST", "/activities/remove_list_memberships") == []
    # Scheduled for after the reset, the clear step checks again and waits rather than clear.
    job = bulk_job_approve(job=job, strategy="clear_and_reimport", run_after=timezone.now())
    assert job.phase == JobPhase.CLEAR_START
    job = _advance(job)
    assert job.state == JobState.PAUSED
    assert "would sit incomplete" in job.error
    assert fake_cc.sent("POST", "/activities/remove_list_memberships") == []

"""List-membership sync jobs, as people use them: create one, approve its plan (now or after the
daily reset), cancel, resume, retry the rows CC rejected, and see how far it is.

A job makes a CC list contain exactly (or at least) a desired set of contacts in a handful of
bulk calls — export, diff, bulk imports and membership removals. Workers take its steps
(:mod:`.bulk_runner`); these use cases only change which steps it may take next.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import time
from collections.abc import Iterator
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from integrations import conf
from integrations.constant_contact.limits import ACTIVITY_TERMINAL_STATES
from integrations.errors import PortalError
from integrations.models import (
    BulkJob,
    ConnectedAccount,
    JobPhase,
    JobState,
    SyncMode,
    SyncStrategy,
)
from integrations.models.jobs import plan_calls_planned
from integrations.services.bulk_csv import BulkInputError, DesiredSet, desired_from_csv
from integrations.services.bulk_files import REJECTED_BY, JobFiles
from integrations.services.bulk_plan import plan_choose, plan_summary
from integrations.services.bulk_progress import progress_estimate, stage_fraction
from integrations.services.quota import key_quota, quota_account_remaining, quota_resume

logger = logging.getLogger(__name__)

__all__ = [
    "BulkInputError",
    "JobActionRefused",
    "bulk_job_approve",
    "bulk_job_cancel",
    "bulk_job_create",
    "bulk_job_plan_lines",
    "bulk_job_progress",
    "bulk_job_rejected_csv",
    "bulk_job_resume",
    "bulk_job_retry_failed",
    "bulk_jobs_recoverable",
    "sync_budget_note",
    "sync_sample_csv",
]


class JobActionRefused(PortalError):
    """The job is not in a state that allows this action; nothing changed."""


# --- creating a job ------------------------------------------------------------------------------
def bulk_job_create(
    *,
    account: ConnectedAccount,
    list_id: str,
    list_name: str = "",
    mode: str = SyncMode.REPLACE,
    csv_chunks: Iterator[bytes] | None = None,
    source_list_id: str = "",
    user=None,
) -> BulkJob:
    """Create a sync job, validating the desired membership before anything is sent to CC.

    ``csv_chunks`` streams the uploaded CSV (it is copied to the job's folder, then validated
    without being held in memory); or ``source_list_id`` names another CC list whose members are
    the desired set. Raises :class:`BulkInputError` with a one-line message on bad input, in
    which case no job remains.
    """
    if mode not in SyncMode.values:
        raise BulkInputError(f"mode must be replace or add, not {mode!r}.")
    if not list_id:
        raise BulkInputError("choose the list to sync.")
    if (csv_chunks is None) == (not source_list_id):
        raise BulkInputError("give either a CSV file or a source list, not both or neither.")
    if source_list_id and source_list_id == list_id:
        raise BulkInputError("the source list must differ from the list being synced.")
    if not account.is_active:
        raise BulkInputError(f"{account} is not connected; reconnect it first.")

    job = BulkJob.objects.create(
        account=account,
        list_id=list_id,
        list_name=list_name,
        mode=mode,
        source_list_id=source_list_id,
        state=JobState.DRAFT,
        created_by=user if getattr(user, "pk", None) else None,
    )
    files = JobFiles(job.pk)
    summary: dict[str, Any] = {}
    try:
        try:
            files.create()
            if csv_chunks is not None:
                files.store_upload(csv_chunks)
        except OSError as exc:
            logger.error("Could not store the files of job %s: %s", job.pk, exc)
            raise BulkInputError(
                f"the file could not be read or stored ({exc.strerror or exc})."
            ) from None
        if csv_chunks is not None:
            desired = desired_from_csv(files.desired, max_bytes=conf.bulk_upload_max_bytes())
            _require_contacts(desired, mode=mode)
            summary = input_summary(desired)
            files.write_rejected("file", desired.rejected)
            job.source_file = str(files.desired)
    except BaseException:
        files.remove()
        job.delete()
        raise
    job.plan = {"input": summary}
    job.state = JobState.PLANNING
    job.phase = JobPhase.EXPORT_START
    # One lease of grace for the task the caller enqueues; after it the watchdog steps in.
    job.lease_expires_at = timezone.now() + dt.timedelta(seconds=conf.bulk_lease_seconds())
    job.progress = progress_dict(phase_label="Waiting for a worker to export the list")
    job.save()
    return job


def bulk_job_discard(*, job: BulkJob) -> None:
    """Forget a job no worker has touched (it sent nothing), with its files."""
    if job.calls_used or job.state not in (JobState.DRAFT, JobState.PLANNING):
        raise JobActionRefused(f"job {job.pk} has started; cancel it instead.")
    JobFiles(job.pk).remove()
    job.delete()


def bulk_job_name_list(*, job: BulkJob, list_name: str) -> BulkJob:
    """Record the synced list's name as CC reports it."""
    BulkJob.objects.filter(pk=job.pk).update(list_name=list_name[:255])
    job.list_name = list_name[:255]
    return job


def _require_contacts(desired: DesiredSet, *, mode: str) -> None:
    """A file without one usable contact is refused: in replace mode it would empty the list,
    which is never what an upload full of rejected rows means."""
    if desired.contacts:
        return
    if desired.rejected:
        first = desired.rejected[0]
        reason = (
            f"none of its {desired.rows_read:,} rows is usable (line {first.line}: {first.reason})"
        )
    else:
        reason = "it has a header but no contacts"
    effect = "would remove every member" if mode == SyncMode.REPLACE else "would add nobody"
    raise BulkInputError(f"the file was refused: {reason}, so the sync {effect}.")


def input_summary(desired: DesiredSet) -> dict[str, Any]:
    """What the plan says of the desired membership as it was read."""
    return {
        "rows_read": desired.rows_read,
        "contacts": len(desired.contacts),
        "duplicates": desired.duplicates,
        "rejected": len(desired.rejected),
        "ignored_columns": desired.ignored_columns,
    }


# --- acting on a job ---------------------------------------------------------------------------
def bulk_job_approve(
    *,
    job: BulkJob,
    run_after: dt.datetime | None = None,
    strategy: str | None = None,
    allow_removals: bool = False,
) -> BulkJob:
    """Run a planned job now (or from ``run_after``, e.g. when tomorrow's budget fits it).

    ``strategy`` picks one of the plan's options (its default otherwise). Refused, with
    nothing changed, when the plan's removals need confirming and ``allow_removals`` is not
    given, or when clearing the list is chosen to run now and today's remaining budget does
    not cover the whole re-import (a list is never emptied that cannot be filled again today).
    """
    job.refresh_from_db()
    if not job.can_run:
        raise JobActionRefused(
            f"this job is {job.get_state_display().lower()}, not waiting for approval."
        )
    plan = job.plan
    if strategy is not None and strategy != plan.get("strategy"):
        try:
            plan = plan_choose(plan, strategy)
        except ValueError as exc:
            raise JobActionRefused(f"{exc} Nothing ran.") from None
    if plan.get("removals_need_confirmation") and not allow_removals:
        raise JobActionRefused(f"{plan['removal_note']} Nothing ran.")
    clearing = plan.get("strategy") == SyncStrategy.CLEAR_AND_REIMPORT
    if clearing and run_after is None:
        clear_budget_check(job=job, plan=plan)
    start = run_after or timezone.now()
    updated = BulkJob.objects.filter(pk=job.pk, state=JobState.PLANNED).update(
        plan=plan,
        calls_planned=plan_calls_planned(plan),
        state=JobState.QUEUED,
        phase=JobPhase.CLEAR_START if clearing else JobPhase.SUBMIT,
        paused_until=run_after,
        lease_expires_at=start + dt.timedelta(seconds=conf.bulk_lease_seconds()),
        updated_at=timezone.now(),
    )
    job.refresh_from_db()
    if not updated:
        raise JobActionRefused(
            f"this job is {job.get_state_display().lower()}, not waiting for approval."
        )
    return job


class ClearNotCovered(JobActionRefused):
    """Clearing the list now would leave it incomplete: today's budget cannot re-import it."""


def clear_budget_check(*, job: BulkJob, plan: dict) -> None:
    """Refuse to empty the list unless what remains of today's background budget (and of the
    account's own cap) covers every call the re-import still needs."""
    needed = int(plan["calls_after_export"])
    remaining = int(quota_account_remaining(account=job.account)["remaining"])
    if remaining < needed:
        raise ClearNotCovered(
            f"clearing and re-importing needs {needed:,} calls and {remaining:,} remain "
            "today: the list would sit incomplete until the next reset. Schedule it after the "
            "reset, or run it in batches."
        )


def bulk_job_cancel(*, job: BulkJob) -> BulkJob:
    """Cancel the job: at once when no worker holds it (planning, planned, queued, paused, or
    between two polls), else the worker stops before its next step. Activities CC already
    accepted finish at CC (CC cannot cancel them); the error says how many."""
    with transaction.atomic():
        locked = BulkJob.objects.select_for_update().get(pk=job.pk)
        if locked.is_finished:
            job.refresh_from_db()
            return job
        locked.cancel_requested = True
        if not _lease_live(locked):
            for name, value in job_finish(JobState.CANCELLED, error=cancel_note(locked)).items():
                setattr(locked, name, value)
        locked.save()
    job.refresh_from_db()
    return job


def cancel_note(job: BulkJob) -> str:
    """What a cancelled job says: whether it ran, and how many accepted activities CC will
    still finish."""
    if job.state in (JobState.DRAFT, JobState.PLANNED, JobState.QUEUED):
        return "Cancelled before it ran."
    checkpoint = job.checkpoint or {}
    in_flight = [
        a["id"]
        for a in checkpoint.get("activities", [])
        if a.get("state") not in ACTIVITY_TERMINAL_STATES
    ]
    clear = checkpoint.get("clear")
    if clear and clear.get("state") not in ACTIVITY_TERMINAL_STATES:
        in_flight.append(clear["id"])
    note = "Cancelled while paused." if job.state == JobState.PAUSED else "Cancelled."
    if in_flight:
        count = len(in_flight)
        note += (
            f" {count} activit{'y' if count == 1 else 'ies'} already accepted by CC will "
            "still complete there."
        )
    return note


def bulk_job_resume(*, job: BulkJob) -> BulkJob:
    """Continue a job paused for CC's daily quota now, e.g. when CC's day rolled over before
    ours or a support ticket raised the limit; the caller enqueues it.

    Resuming also lifts the key's local stop (``quota_resume``) that CC's ``quota_exceeded``
    set until 00:00 UTC, for every job and page using that key: without that, the next call
    would be refused locally until the reset. Should CC still be out of quota, the first call
    gets ``quota_exceeded`` again and the job pauses again, costing one call."""
    job.refresh_from_db()
    if not job.can_resume:
        raise JobActionRefused(f"this job is {job.get_state_display().lower()}, not paused.")
    # The key's stop goes first: should the quota store be unreachable, the job stays paused
    # (and resumable) instead of running into the stop.
    quota_resume(api_key=job.account.api_key)
    # The lease the pause left (until the reset) goes too, so the watchdog may take the job
    # should the worker the caller enqueues die.
    checkpoint = dict(job.checkpoint or {})
    state = checkpoint.pop("paused_from", JobState.RUNNING)
    BulkJob.objects.filter(pk=job.pk, state=JobState.PAUSED, lease_owner="").update(
        state=state,
        checkpoint=checkpoint,
        error="",
        paused_until=None,
        lease_expires_at=None,
        updated_at=timezone.now(),
    )
    job.refresh_from_db()
    if job.state != state:
        raise JobActionRefused(f"this job is {job.get_state_display().lower()}, not paused.")
    return job


def bulk_job_retry_failed(*, job: BulkJob, user=None) -> BulkJob:
    """A new add-mode job for the rows CC rejected (those whose email is known)."""
    emails = [
        email
        for row in JobFiles(job.pk).rejected_rows("cc")
        if "@" in (email := (row.get("email") or "").strip().lstrip("'"))
    ]
    if not emails:
        raise JobActionRefused("no rows to retry: CC rejected no rows that name an email address.")
    body = "email\n" + "\n".join(dict.fromkeys(emails)) + "\n"
    return bulk_job_create(
        account=job.account,
        list_id=job.list_id,
        list_name=job.list_name,
        mode=SyncMode.ADD,
        csv_chunks=iter([body.encode()]),
        user=user,
    )


def _lease_live(job: BulkJob) -> bool:
    return (
        bool(job.lease_owner)
        and job.lease_expires_at is not None
        and job.lease_expires_at > timezone.now()
    )


def job_finish(state: str, *, error: str = "") -> dict[str, Any]:
    """The fields a job ends with, in ``state``."""
    return {"state": state, "error": error, "finished_at": timezone.now(), "phase": JobPhase.DONE}


def bulk_jobs_recoverable() -> list[int]:
    """Jobs that should be moving but have no live worker: the watchdog re-enqueues them."""
    now = timezone.now()
    stuck = BulkJob.objects.filter(
        Q(state__in=BulkJob.MOVING_STATES) | Q(state=JobState.PAUSED, paused_until__lte=now),
    ).filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now))
    stuck = stuck.exclude(state=JobState.QUEUED, paused_until__gt=now)
    return list(stuck.values_list("pk", flat=True))


# --- what people see ---------------------------------------------------------------------------
def bulk_job_rejected_csv(job: BulkJob) -> str:
    """Input rows we rejected and rows CC rejected, as one CSV with the columns
    ``rejected_by,line,email,reason`` (every value formula-neutralised)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["rejected_by", "line", "email", "reason"])
    files = JobFiles(job.pk)
    for who in REJECTED_BY:
        for row in files.rejected_rows(who):
            # CC names no line of the file, only the row's place in an import chunk.
            line = row.get("line", "") if who == "file" else ""
            writer.writerow([who, line, row.get("email", ""), row.get("reason", "")])
    return out.getvalue()


def progress_dict(**values: Any) -> dict[str, Any]:
    """A job's progress record, stamped with when it was written."""
    return {"updated": time.time(), **values}


def bulk_job_progress(job: BulkJob, *, now: float | None = None) -> dict[str, Any]:
    """What the UI and CLI show: phase, chunk i of N, CC state and percent, calls, staleness,
    and the stage's bar (:mod:`.bulk_progress`): ``fraction``/``percent`` done, ``stage``
    (planning or run), time elapsed and left (``estimating`` until it can be told)."""
    now = time.time() if now is None else now
    progress = dict(job.progress or {})
    age = now - float(progress.get("updated", now))
    resting = job.state in (JobState.PLANNED, JobState.PAUSED, *BulkJob.TERMINAL_STATES)
    progress["state"] = job.state
    progress["phase"] = job.phase
    progress["age_seconds"] = max(0, int(age))
    progress["stalled"] = (
        not resting and not job.is_scheduled and age > conf.bulk_stalled_after_seconds()
    )
    progress["calls_used"] = job.calls_made
    progress["calls_planned"] = job.calls_planned
    steps_total, steps = _stage_steps(job)
    started = job.clock_started_at
    estimate = progress_estimate(
        fraction=stage_fraction(
            steps_total=steps_total, steps=steps, completed=job.state == JobState.COMPLETED
        ),
        started_at=started.timestamp() if started else None,
        measured_at=progress.get("updated"),
        now=now,
        moving=job.is_moving and not job.is_scheduled,
    )
    progress["stage"] = "planning" if job.is_planning_stage else "run"
    progress["steps_total"] = steps_total
    progress["fraction"] = estimate.fraction
    progress["percent"] = estimate.percent
    progress["elapsed_seconds"] = estimate.elapsed_seconds
    progress["elapsed_text"] = estimate.elapsed_text
    progress["remaining_seconds"] = estimate.remaining_seconds
    progress["remaining_text"] = estimate.remaining_text
    progress["estimating"] = estimate.estimating
    return progress


def _stage_steps(job: BulkJob) -> tuple[int, list[dict[str, Any]]]:
    """The current stage's number of CC activities, and the records of those submitted.

    Planning exports the list (and the source list, when there is one); the run clears the
    list when that was chosen, then imports and removes: the plan's ``import_calls`` plus
    ``removal_calls`` (the clear is the one removal call of a clear-and-reimport)."""
    checkpoint = job.checkpoint or {}
    if job.is_planning_stage:
        names = ("export", "source_export") if job.source_list_id else ("export",)
        return len(names), [checkpoint[name] for name in names if checkpoint.get(name)]
    plan = job.plan or {}
    total = int(plan.get("import_calls", 0)) + int(plan.get("removal_calls", 0))
    steps = [checkpoint["clear"]] if checkpoint.get("clear") else []
    steps += list(checkpoint.get("activities", []))
    return total, steps


def bulk_job_plan_lines(job: BulkJob) -> list[str]:
    """The plan in words, for the job's page and the CLI, with the call figure the job shows
    (the lines kept with the plan were written before the export's calls were counted)."""
    plan = job.plan or {}
    try:
        return plan_summary(plan)
    except (KeyError, TypeError, ValueError):
        return list(plan.get("summary", []))


def sync_budget_note(job: BulkJob) -> str:
    """Why a sync sees less than the key's whole day: the interactive reserve, from the one
    figure the quota books against (``KeyQuota.background_per_day``)."""
    quota = key_quota(job.account.api_key)
    reserve = quota.per_day - quota.background_per_day
    if not reserve:
        return f"Syncs may use all of this key's {quota.per_day:,} calls a day."
    return (
        f"Syncs run in the background: they may use {quota.background_per_day:,} of this key's "
        f"{quota.per_day:,} calls a day. The other {reserve:,} ({reserve / quota.per_day:.0%}) "
        "are kept for people using the portal and the API, and no sync can spend them."
    )


#: The sample's columns: the email, then CC fields people often bring, each under its CC name
#: (one of the spellings ``bulk_fields.COLUMN_ALIASES`` accepts).
SAMPLE_COLUMNS = (
    "email",
    "first_name",
    "last_name",
    "company_name",
    "job_title",
    "phone",
    "city",
    "country",
    "birthday_month",
    "birthday_day",
    "anniversary",
)
SAMPLE_CONTACTS = (
    {
        "email": "ada@example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "company_name": "Analytical Engines",
        "job_title": "Analyst",
        "phone": "+44 20 7946 0000",
        "city": "London",
        "country": "United Kingdom",
        "birthday_month": "12",
        "birthday_day": "10",
        "anniversary": "2024-06-01",
    },
    {
        "email": "grace@example.com",
        "first_name": "Grace",
        "last_name": "Hopper",
        "job_title": "Rear Admiral",
        "city": "Arlington",
        "country": "United States",
        "birthday_month": "12",
        "birthday_day": "9",
    },
    {"email": "alan@example.com", "first_name": "Alan", "last_name": "Turing"},
)


def sync_sample_csv() -> str:
    """A small desired-membership CSV the importer accepts whole: an ``email`` column, then
    optional CC fields (an empty cell leaves that field of the contact as it is); CRLF lines."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=SAMPLE_COLUMNS, restval="", lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(SAMPLE_CONTACTS)
    return out.getvalue()

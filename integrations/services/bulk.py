"""List-membership sync: make a CC list contain exactly (or at least) a desired set of contacts
in a handful of bulk calls — export, diff, bulk imports and membership removals.

A job is a persisted state machine. Every step ends in a recovery point written to the
``BulkJob`` row (phase, checkpoint, activity ids the moment CC returns them), fenced by the
job's lease, so a job whose worker died is resumed by another worker from its last recovery
point. Steps that may repeat after a crash are idempotent at CC (an export, the import of the
same chunk into the same list, removing the same contacts), so a crash costs at most one
repeated idempotent step, never a lost or a contradictory effect.

Phases::

    planning:  export_start → export_wait → export_download → [source_* for a list source]
               → diff → (state PLANNED, waiting for approval)
    running:   clear_start → clear_wait            (strategy clear_and_reimport only)
               → submit (imports + removal batches) → wait_all → finish

Every call goes through the gateway's ``background`` lane. CC's ``quota_exceeded`` pauses the
job until the UTC reset instead of failing it.

Activities are polled ~2 s after submission, then at intervals growing 1.6 times, up to 30 s,
or later when CC's ``percent_done`` predicts a longer wait; one ``GET /v3/activities`` covers
all of a wave's activities. Timings are settings (see :func:`first_poll_delay`,
:func:`max_poll_delay`, :func:`lease_seconds`, :func:`watchdog_every_seconds`) so tests can
shorten them; the defaults are the design's.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Q
from django.utils import timezone

from integrations.constant_contact.errors import (
    CCActivityQueueFull,
    CCHTTPError,
    CCQuotaExceeded,
    CCServerError,
    CCTransportError,
)
from integrations.models import ApiCall, BulkJob, ConnectedAccount, JobState, Lane, SyncMode
from integrations.services import audit
from integrations.services.bulk_input import (
    CsvRejected,
    DesiredSet,
    RejectedRow,
    chunk_sizes,
    current_from_export_csv,
    desired_from_csv,
    import_chunks,
    membership_diff,
    rejected_rows_csv,
    sync_plan,
)
from integrations.services.gateway import cc_client
from integrations.services.quota import (
    QuotaExhausted,
    QuotaStoreUnavailable,
    next_utc_midnight,
    quota_usage,
)
from integrations.services.tokens import AccountNotConnected, TokenRefreshFailed

logger = logging.getLogger(__name__)

_IMPORT_INDEX = re.compile(r"import_data\[(\d+)\]")
TERMINAL_ACTIVITY_STATES = {"completed", "cancelled", "failed", "timed_out"}
ACTIVE_JOB_STATES = (JobState.PLANNING, JobState.QUEUED, JobState.RUNNING)
REMOVE_BATCH = 500
POLL_BACKOFF = 1.6
MAX_STEP_FAILURES = 5
# A worker sleeps in-process for short waits and hands longer ones back to the task queue.
MAX_INLINE_WAIT = 10.0


# --- timings (settings with the defaults the engine is designed for) --------------------------
def first_poll_delay() -> float:
    """``CC_BULK_FIRST_POLL_DELAY``: seconds before an activity's first status poll; each later
    poll waits ``POLL_BACKOFF`` times longer, up to :func:`max_poll_delay`."""
    return float(getattr(settings, "CC_BULK_FIRST_POLL_DELAY", 2.0))


def max_poll_delay() -> float:
    """``CC_BULK_MAX_POLL_DELAY``: the longest wait between two status polls."""
    return float(getattr(settings, "CC_BULK_MAX_POLL_DELAY", 30.0))


def lease_seconds() -> float:
    """``CC_BULK_LEASE_SECONDS``: how long a worker's claim on a job lives without a heartbeat;
    after it, the watchdog hands the job to another worker."""
    return float(getattr(settings, "CC_BULK_LEASE_SECONDS", 60.0))


def stalled_after_seconds() -> float:
    """``CC_BULK_STALLED_AFTER``: a moving job with no progress update for this long is shown
    as stalled (by default one and a half leases)."""
    return float(getattr(settings, "CC_BULK_STALLED_AFTER", 1.5 * lease_seconds()))


def watchdog_every_seconds() -> float:
    """``CC_BULK_WATCHDOG_SECONDS``: how often the watchdog looks for jobs without a worker."""
    return float(getattr(settings, "CC_BULK_WATCHDOG_SECONDS", 15.0))


class BulkInputError(Exception):
    """The desired membership cannot be used; nothing was sent to CC."""


class JobLeaseLost(Exception):
    """Another worker took over this job; this one must stop touching it."""


@dataclass
class Advance:
    """What a run of :func:`bulk_job_advance` ended with."""

    state: str
    run_after: dt.datetime | None = None


# --- files -------------------------------------------------------------------------------------
def job_dir(job: BulkJob) -> Path:
    return Path(settings.MEDIA_ROOT) / "bulk" / f"job-{job.pk}"


def _desired_path(job: BulkJob) -> Path:
    return job_dir(job) / "desired.csv"


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
    folder = job_dir(job)
    try:
        input_summary: dict[str, Any] = {}
        path = _desired_path(job)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if csv_chunks is not None:
                with path.open("wb") as handle:
                    for chunk in csv_chunks:
                        handle.write(chunk)
        except OSError as exc:
            logger.error("Could not store the files of job %s: %s", job.pk, exc)
            raise BulkInputError(
                f"the file could not be read or stored ({exc.strerror or exc})."
            ) from None
        if csv_chunks is not None:
            try:
                desired = desired_from_csv(path)
            except CsvRejected as exc:
                raise BulkInputError(str(exc)) from None
            _require_contacts(desired, mode=mode)
            input_summary = _input_summary(desired)
            _write_rejected(folder / "rejected_input.csv", desired.rejected)
            job.source_file = str(path)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        job.delete()
        raise
    job.plan = {"input": input_summary}
    job.state = JobState.PLANNING
    job.phase = "export_start"
    # One lease of grace for the task the caller enqueues; after it the watchdog steps in.
    job.lease_expires_at = timezone.now() + dt.timedelta(seconds=lease_seconds())
    job.progress = _progress_dict(phase_label="Waiting for a worker to export the list")
    job.save()
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


def _input_summary(desired: DesiredSet) -> dict[str, Any]:
    return {
        "rows_read": desired.rows_read,
        "contacts": len(desired.contacts),
        "duplicates": desired.duplicates,
        "rejected": len(desired.rejected),
        "ignored_columns": desired.ignored_columns,
    }


def _write_rejected(path: Path, rows: list[RejectedRow]) -> None:
    path.write_text(rejected_rows_csv(rows), encoding="utf-8")


# --- driving a job ---------------------------------------------------------------------------------
def bulk_job_advance(
    *,
    job_id: int,
    owner: str | None = None,
    on_progress: Callable[[BulkJob], None] | None = None,
    max_inline_wait: float = MAX_INLINE_WAIT,
) -> Advance:
    """Run the job's steps until it finishes, pauses, awaits approval, or must wait longer than
    ``max_inline_wait`` (then ``run_after`` says when to continue). Safe to call from several
    workers at once: only the lease holder proceeds; the others return at once."""
    owner = owner or uuid.uuid4().hex
    job = _lease_take(job_id, owner)
    if job is None:
        current = BulkJob.objects.get(pk=job_id)
        return Advance(state=current.state, run_after=None)
    runner = _JobRunner(job, owner=owner, on_progress=on_progress)
    outcome = Advance(state=job.state)
    try:
        outcome = runner.run(max_inline_wait=max_inline_wait)
        return outcome
    except JobLeaseLost:
        outcome = Advance(state=BulkJob.objects.get(pk=job_id).state)
        return outcome
    finally:
        # A job continued later from the queue keeps the watchdog off until shortly after its
        # run time; any worker may take it over from then on.
        expires = (
            outcome.run_after + dt.timedelta(seconds=min(30.0, lease_seconds()))
            if outcome.run_after
            else None
        )
        BulkJob.objects.filter(pk=job_id, lease_owner=owner).update(
            lease_owner="", lease_expires_at=expires
        )


def _lease_take(job_id: int, owner: str) -> BulkJob | None:
    now = timezone.now()
    taken = BulkJob.objects.filter(
        Q(lease_owner="") | Q(lease_expires_at__lt=now) | Q(lease_owner=owner),
        pk=job_id,
        state__in=[*ACTIVE_JOB_STATES, JobState.PAUSED],
    ).update(
        lease_owner=owner,
        lease_expires_at=now + dt.timedelta(seconds=lease_seconds()),
        heartbeat_at=now,
    )
    if not taken:
        return None
    return BulkJob.objects.select_related("account__api_key").get(pk=job_id)


def bulk_job_approve(*, job: BulkJob, run_after: dt.datetime | None = None) -> BulkJob:
    """Run a planned job now (or from ``run_after``, e.g. when tomorrow's budget fits it)."""
    start = run_after or timezone.now()
    updated = BulkJob.objects.filter(pk=job.pk, state=JobState.PLANNED).update(
        state=JobState.QUEUED,
        phase="clear_start" if job.plan.get("strategy") == "clear_and_reimport" else "submit",
        paused_until=run_after,
        lease_expires_at=start + dt.timedelta(seconds=lease_seconds()),
        updated_at=timezone.now(),
    )
    job.refresh_from_db()
    if not updated:
        raise BulkInputError(
            f"this job is {job.get_state_display().lower()}, not waiting for approval."
        )
    return job


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
            _finish(locked, JobState.CANCELLED, error=_cancel_note(locked))
        locked.save()
    job.refresh_from_db()
    return job


def _cancel_note(job: BulkJob) -> str:
    if job.state in (JobState.DRAFT, JobState.PLANNED, JobState.QUEUED):
        return "Cancelled before it ran."
    in_flight = [
        a["id"]
        for a in (job.checkpoint or {}).get("activities", [])
        if a.get("state") not in TERMINAL_ACTIVITY_STATES
    ]
    clear = (job.checkpoint or {}).get("clear")
    if clear and clear.get("state") not in TERMINAL_ACTIVITY_STATES:
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
    from integrations.services.quota import quota_resume

    job.refresh_from_db()
    if job.state != JobState.PAUSED:
        raise BulkInputError(f"this job is {job.get_state_display().lower()}, not paused.")
    # The key's stop goes first: should the quota store be unreachable, the job stays paused
    # (and resumable) instead of running into the stop.
    quota_resume(api_key=job.account.api_key)
    # The lease the pause left (until the reset) goes too, so the watchdog may take the job
    # should the worker the caller enqueues die.
    BulkJob.objects.filter(pk=job.pk, state=JobState.PAUSED, lease_owner="").update(
        state=JobState.RUNNING,
        paused_until=None,
        lease_expires_at=None,
        updated_at=timezone.now(),
    )
    job.refresh_from_db()
    if job.state != JobState.RUNNING:
        raise BulkInputError(f"this job is {job.get_state_display().lower()}, not paused.")
    return job


def _lease_live(job: BulkJob) -> bool:
    return (
        bool(job.lease_owner)
        and job.lease_expires_at is not None
        and job.lease_expires_at > timezone.now()
    )


def bulk_jobs_recoverable() -> list[int]:
    """Jobs that should be moving but have no live worker: the watchdog re-enqueues them."""
    now = timezone.now()
    stuck = BulkJob.objects.filter(
        Q(state__in=ACTIVE_JOB_STATES) | Q(state=JobState.PAUSED, paused_until__lte=now),
    ).filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now))
    stuck = stuck.exclude(state=JobState.QUEUED, paused_until__gt=now)
    return list(stuck.values_list("pk", flat=True))


def _finish(job: BulkJob, state: str, *, error: str = "") -> None:
    job.state = state
    job.error = error
    job.finished_at = timezone.now()
    job.phase = "done"


# --- progress ------------------------------------------------------------------------------------
def _progress_dict(**values: Any) -> dict[str, Any]:
    return {"updated": time.time(), **values}


def bulk_job_progress(job: BulkJob) -> dict[str, Any]:
    """What the UI and CLI show: phase, chunk i of N, CC state and percent, calls, staleness."""
    progress = dict(job.progress or {})
    age = time.time() - float(progress.get("updated", time.time()))
    waiting_states = (JobState.PLANNED, JobState.PAUSED, *BulkJob.TERMINAL_STATES)
    scheduled = (
        job.state == JobState.QUEUED and job.paused_until and job.paused_until > timezone.now()
    )
    progress["state"] = job.state
    progress["phase"] = job.phase
    progress["age_seconds"] = max(0, int(age))
    progress["stalled"] = (
        job.state not in waiting_states and not scheduled and age > stalled_after_seconds()
    )
    progress["calls_used"] = job.calls_used
    progress["calls_planned"] = job.calls_planned
    progress["percent"] = _overall_percent(job, progress)
    return progress


def _overall_percent(job: BulkJob, progress: dict[str, Any]) -> int:
    if job.state == JobState.COMPLETED:
        return 100
    done = progress.get("activities_done", 0)
    total = progress.get("activities_total", 0)
    current = progress.get("cc_percent", 0) or 0
    if not total:
        return 0
    return min(99, int(100 * (done + current / 100) / total))


# --- the state machine ---------------------------------------------------------------------------
class _JobRunner:
    def __init__(
        self, job: BulkJob, *, owner: str, on_progress: Callable[[BulkJob], None] | None
    ) -> None:
        self.job = job
        self.owner = owner
        self.on_progress = on_progress
        self.client = cc_client(account=job.account, lane=Lane.BACKGROUND)
        self.checkpoint: dict[str, Any] = dict(job.checkpoint or {})
        self._desired: DesiredSet | None = None

    def _desired_set(self) -> DesiredSet:
        # Parsed once per run: every import chunk of a run slices the same set.
        if self._desired is None:
            self._desired = desired_from_csv(_desired_path(self.job))
        return self._desired

    # Each phase handler does one step and returns the next phase, or a wait.
    def run(self, *, max_inline_wait: float) -> Advance:
        job = self.job
        if job.state == JobState.PAUSED:
            if job.paused_until and job.paused_until > timezone.now():
                return Advance(state=job.state, run_after=job.paused_until)
            self._save(state=JobState.RUNNING, paused_until=None)
        if job.state == JobState.QUEUED:
            if job.paused_until and job.paused_until > timezone.now():
                return Advance(state=job.state, run_after=job.paused_until)
            self._save(
                state=JobState.RUNNING,
                started_at=job.started_at or timezone.now(),
                paused_until=None,
            )
        while True:
            self._refresh_cancel_flag()
            if self.job.cancel_requested:
                self._cancel()
                return Advance(state=self.job.state)
            if self.job.state in (JobState.PLANNED, *BulkJob.TERMINAL_STATES):
                return Advance(state=self.job.state)
            wait = self.checkpoint.get("wait_until", 0) - time.time()
            if wait > 0:
                if wait > max_inline_wait:
                    return Advance(
                        state=self.job.state, run_after=timezone.now() + dt.timedelta(seconds=wait)
                    )
                self._sleep(wait)
                continue
            try:
                with audit.calls_attributed_to(self.job):
                    getattr(self, f"_step_{self.job.phase}")()
                self.checkpoint.pop("failures", None)
            except (CCQuotaExceeded, QuotaExhausted) as exc:
                # retry_at is the reset plus the day guard: parking until then avoids spinning.
                reset = (
                    getattr(exc, "retry_at", None)
                    or getattr(exc, "reset_at", None)
                    or next_utc_midnight()
                )
                self._save(
                    state=JobState.PAUSED,
                    paused_until=reset,
                    progress=self._progress(
                        phase_label=f"Paused: CC's daily quota is spent; resumes after {reset:%Y-%m-%d %H:%M} UTC"
                    ),
                )
                return Advance(state=JobState.PAUSED, run_after=reset)
            except CCActivityQueueFull:
                self._wait(60.0, "CC's activity queue for this account is full; waiting a minute")
            except (CCTransportError, CCServerError) as exc:
                if not self._retry_later(f"CC did not answer ({type(exc).__name__})"):
                    self._fail(f"Constant Contact kept failing ({exc}). Retry the job later.")
                    return Advance(state=self.job.state)
            except (TokenRefreshFailed, QuotaStoreUnavailable, DatabaseError) as exc:
                # Passing trouble on our side (the token endpoint backing off, the quota store
                # or the database briefly unreachable): the step is repeated a few times.
                if not self._retry_later(f"{type(exc).__name__}: {exc}"):
                    self._fail(f"{exc}. The job stopped after {MAX_STEP_FAILURES} attempts.")
                    return Advance(state=self.job.state)
            except AccountNotConnected as exc:
                self._fail(f"{exc}. Reconnect the account, then start the sync again.")
                return Advance(state=self.job.state)
            except CCHTTPError as exc:
                self._fail(str(exc))
                return Advance(state=self.job.state)
            except JobLeaseLost:
                raise
            except Exception as exc:
                # A step that fails for a reason no retry can fix (its input file gone, a
                # disk error, a bug) fails the job once, visibly, instead of being recovered
                # by the watchdog and failing again forever.
                logger.exception("Bulk job %s stopped on an unexpected error", self.job.pk)
                self._fail(
                    f"the job stopped on an unexpected error in step {self.job.phase} "
                    f"({type(exc).__name__}: {exc}). Nothing more is sent for it."
                )
                return Advance(state=self.job.state)

    def _retry_later(self, reason: str) -> bool:
        """Schedule the failed step again with exponential backoff; False once it has failed
        ``MAX_STEP_FAILURES`` times in a row."""
        failures = self.checkpoint.get("failures", 0) + 1
        if failures >= MAX_STEP_FAILURES:
            return False
        self.checkpoint["failures"] = failures
        self._wait(min(max_poll_delay(), 2.0 * 2**failures), f"{reason}; retrying")
        return True

    def _sleep(self, seconds: float) -> None:
        deadline = time.time() + seconds
        while (left := deadline - time.time()) > 0:
            # Heartbeats well inside the lease keep other workers off while this one waits.
            time.sleep(min(left, lease_seconds() / 3))
            self._heartbeat()

    def _refresh_cancel_flag(self) -> None:
        self.job.cancel_requested = (
            BulkJob.objects.filter(pk=self.job.pk).values_list("cancel_requested", flat=True).get()
        )

    # --- persistence (fenced by the lease) ---
    def _save(self, **fields: Any) -> None:
        now = timezone.now()
        fields.setdefault("checkpoint", self.checkpoint)
        fields["calls_used"] = ApiCall.objects.filter(bulk_job=self.job).count()
        fields["heartbeat_at"] = now
        fields["lease_expires_at"] = now + dt.timedelta(seconds=lease_seconds())
        fields["updated_at"] = now
        if not BulkJob.objects.filter(pk=self.job.pk, lease_owner=self.owner).update(**fields):
            raise JobLeaseLost(self.job.pk)
        for name, value in fields.items():
            setattr(self.job, name, value)
        if self.on_progress:
            self.on_progress(self.job)

    def _heartbeat(self) -> None:
        self._save()

    def _progress(self, **values: Any) -> dict[str, Any]:
        base = {
            k: v
            for k, v in (self.job.progress or {}).items()
            if k in ("activities_total", "activities_done", "chunk", "chunks")
        }
        return _progress_dict(**{**base, **values})

    def _goto(self, phase: str, **progress: Any) -> None:
        self._save(
            phase=phase, progress=self._progress(**progress) if progress else self.job.progress
        )

    def _wait(self, seconds: float, label: str) -> None:
        self.checkpoint["wait_until"] = time.time() + seconds
        self._save(progress=self._progress(phase_label=label))

    def _fail(self, message: str) -> None:
        logger.warning("Bulk job %s failed: %s", self.job.pk, message)
        self._save(
            state=JobState.FAILED,
            error=message[:2000],
            finished_at=timezone.now(),
            phase="done",
            progress=self._progress(phase_label="Failed"),
        )

    def _cancel(self) -> None:
        self.job.checkpoint = self.checkpoint
        self._save(
            state=JobState.CANCELLED,
            error=_cancel_note(self.job),
            finished_at=timezone.now(),
            phase="done",
            progress=self._progress(phase_label="Cancelled"),
        )

    # --- activities and polling ---
    def _poll(self, activities: list[dict[str, Any]], label: str) -> bool:
        """Refresh the state of ``activities`` (one GET /activities covers several);
        returns True when all are terminal, else schedules the next poll."""
        pending = [a for a in activities if a.get("state") not in TERMINAL_ACTIVITY_STATES]
        if not pending:
            return True
        if len(pending) == 1:
            answers = {pending[0]["id"]: self.client.activity(pending[0]["id"])}
        else:
            answers = {
                a.get("activity_id"): a
                for a in self.client.activities(limit=min(500, max(50, 2 * len(pending))))
            }
            for missing in [a for a in pending if a["id"] not in answers][:1]:
                answers[missing["id"]] = self.client.activity(missing["id"])
        for activity in pending:
            answer = answers.get(activity["id"])
            if answer:
                activity["state"] = answer.get("state", activity.get("state"))
                activity["percent"] = answer.get("percent_done", 0) or 0
                activity["status"] = answer.get("status") or {}
                activity["errors"] = (answer.get("activity_errors") or [])[:200]
                links = answer.get("_links") or {}
                if links.get("results", {}).get("href"):
                    activity["results"] = links["results"]["href"]
        done = sum(1 for a in activities if a.get("state") in TERMINAL_ACTIVITY_STATES)
        current = next(
            (a for a in activities if a.get("state") not in TERMINAL_ACTIVITY_STATES), None
        )
        if current is None:
            self.checkpoint.pop("poll_delay", None)
            self.checkpoint.pop("wait_until", None)
            self._save(
                progress=self._progress(
                    phase_label=label, activities_done=done, cc_state="completed", cc_percent=100
                )
            )
            return True
        delay = self._next_poll_delay(activities)
        self.checkpoint["wait_until"] = time.time() + delay
        self._save(
            progress=self._progress(
                phase_label=label,
                activities_done=done,
                cc_state=current.get("state"),
                cc_percent=current.get("percent", 0),
            )
        )
        return False

    def _schedule_first_poll(self) -> None:
        first = first_poll_delay()
        self.checkpoint["poll_delay"] = first * POLL_BACKOFF
        self.checkpoint["wait_until"] = time.time() + first

    def _next_poll_delay(self, activities: list[dict[str, Any]]) -> float:
        """Back off geometrically; but when CC's ``percent_done`` says the activities need
        longer than that, wait (a little more than) the time it predicts, so a long import
        costs a couple of polls rather than one per back-off step."""
        delay = float(self.checkpoint.get("poll_delay", first_poll_delay()))
        self.checkpoint["poll_delay"] = min(max_poll_delay(), delay * POLL_BACKOFF)
        now = time.time()
        predictions = [0.0]
        # Run one after another, the wave ends when its total work is done...
        started = min((a.get("submitted_at") or now) for a in activities)
        done = sum(_percent(a) for a in activities)
        if done > 0:
            predictions.append((now - started) * (100 * len(activities) - done) / done)
        # ...run side by side, when its slowest activity is done.
        for activity in activities:
            percent = _percent(activity)
            if 0 < percent < 100:
                elapsed = now - (activity.get("submitted_at") or now)
                predictions.append(elapsed * (100 - percent) / percent)
        return min(max_poll_delay(), max(delay, max(predictions) * 1.1 + 0.25))

    def _record_activity(self, kind: str, answer: dict[str, Any], **extra: Any) -> dict[str, Any]:
        activity = {
            "id": answer["activity_id"],
            "kind": kind,
            "state": answer.get("state", "initialized"),
            "percent": 0,
            "submitted_at": time.time(),
            **extra,
        }
        links = answer.get("_links") or {}
        if links.get("results", {}).get("href"):
            activity["results"] = links["results"]["href"]
        return activity

    # --- planning phases ---
    def _step_export_start(self) -> None:
        answer = self.client.contact_export_create(
            list_ids=[self.job.list_id], fields=["email_address", "first_name", "last_name"]
        )
        self.checkpoint["export"] = self._record_activity("export", answer)
        self._schedule_first_poll()
        self._goto(
            "export_wait",
            phase_label="Exporting the list's current members",
            activities_total=1,
            activities_done=0,
        )

    def _step_export_wait(self) -> None:
        if self._poll([self.checkpoint["export"]], "Exporting the list's current members"):
            self._goto("export_download")

    def _step_export_download(self) -> None:
        self._download(self.checkpoint["export"], job_dir(self.job) / "export.csv")
        self._goto(
            "source_export_start" if self.job.source_list_id else "diff",
            phase_label="Downloaded the current members",
        )

    def _download(self, activity: dict[str, Any], path: Path) -> None:
        file_id = (activity.get("results") or "").rstrip("/").rsplit("/", 1)[-1] or activity["id"]
        text = self.client.contact_export_download(file_id)
        tmp = path.with_suffix(".part")
        tmp.write_text(text or "", encoding="utf-8")
        tmp.replace(path)

    def _step_source_export_start(self) -> None:
        answer = self.client.contact_export_create(
            list_ids=[self.job.source_list_id], fields=["email_address", "first_name", "last_name"]
        )
        self.checkpoint["source_export"] = self._record_activity("export", answer)
        self._schedule_first_poll()
        self._goto(
            "source_export_wait",
            phase_label="Exporting the source list",
            activities_total=1,
            activities_done=0,
        )

    def _step_source_export_wait(self) -> None:
        if self._poll([self.checkpoint["source_export"]], "Exporting the source list"):
            self._goto("source_export_download")

    def _step_source_export_download(self) -> None:
        self._download(self.checkpoint["source_export"], job_dir(self.job) / "source_export.csv")
        _desired_csv_from_export(job_dir(self.job) / "source_export.csv", _desired_path(self.job))
        desired = desired_from_csv(_desired_path(self.job))
        # Rows of the source list the import would refuse go to the rejected-rows download.
        _write_rejected(job_dir(self.job) / "rejected_input.csv", desired.rejected)
        self.job.plan = {**self.job.plan, "input": _input_summary(desired)}
        self._save(plan=self.job.plan)
        self._goto("diff")

    def _step_diff(self) -> None:
        folder = job_dir(self.job)
        desired = self._desired_set()
        with (folder / "export.csv").open(encoding="utf-8", newline="") as handle:
            current = current_from_export_csv(handle)
        # Members whose row was rejected only for a field stay: a replace must not remove them.
        diff = membership_diff(
            desired.contacts.keys(), current, mode=self.job.mode, keep=desired.rejected_valid_emails
        )
        (folder / "diff.json").write_text(
            json.dumps({"adds": diff.adds, "removes": diff.removes, "by_id": diff.removes_by_id}),
            encoding="utf-8",
        )
        add_sizes = chunk_sizes(desired.contacts, diff.adds)
        all_sizes = chunk_sizes(desired.contacts, sorted(desired.contacts))
        # Jobs run in the background lane: its budget, not the whole key's, is what they get.
        usage = quota_usage(api_key=self.job.account.api_key)
        plan = sync_plan(
            diff=diff,
            desired_count=len(desired.contacts),
            chunk_sizes_adds=add_sizes,
            chunk_sizes_all=all_sizes,
            remaining_today=int(usage["background_remaining"]),
            per_day=max(1, int(usage["per_day"]) - int(usage["interactive_reserve"])),
        )
        used = ApiCall.objects.filter(bulk_job=self.job).count()
        plan_dict = {
            **self.job.plan,
            **plan.as_dict(),
            "planning_calls": used,
            "planned_at": timezone.now().isoformat(),
            # Where each import chunk starts, so a step builds only its own chunk.
            "chunk_sizes": all_sizes if plan.strategy == "clear_and_reimport" else add_sizes,
        }
        self._save(
            plan=plan_dict,
            # The plan's total counts the export; the export is done, so count it as it went.
            calls_planned=used + plan.calls_after_export,
            state=JobState.PLANNED,
            phase="awaiting_approval",
            progress=self._progress(
                phase_label="Plan ready: review and run", activities_total=0, activities_done=0
            ),
        )

    # --- running phases ---
    def _import_emails(self, *, whole_set: bool) -> list[str]:
        if whole_set:
            return sorted(self._desired_set().contacts)
        return json.loads((job_dir(self.job) / "diff.json").read_text())["adds"]

    def _chunk(self, index: int, *, whole_set: bool) -> list[dict[str, Any]]:
        """Import chunk ``index``: chunking is greedy, so the chunk that starts where the plan
        says is built alone, exactly as when the whole sequence was chunked."""
        contacts = self._desired_set().contacts
        emails = self._import_emails(whole_set=whole_set)
        sizes = self.job.plan.get("chunk_sizes")
        if sizes is None:  # planned before chunk sizes were stored
            return next(c for i, c in enumerate(import_chunks(contacts, emails)) if i == index)
        start = sum(sizes[:index])
        (chunk,) = import_chunks(contacts, emails[start : start + sizes[index]])
        return chunk

    def _removes(self) -> list[str]:
        return json.loads((job_dir(self.job) / "diff.json").read_text())["removes"]

    def _step_clear_start(self) -> None:
        # Emptying the list must finish before any import adds people back: CC runs queued
        # activities in no particular order.
        answer = self.client.list_memberships_remove(
            source_list_ids=[self.job.list_id], list_ids=[self.job.list_id]
        )
        self.checkpoint["clear"] = self._record_activity("clear", answer)
        self._schedule_first_poll()
        self._goto(
            "clear_wait",
            phase_label="Emptying the list before re-importing it",
            activities_total=1 + self.job.plan.get("import_calls", 0),
            activities_done=0,
        )

    def _step_clear_wait(self) -> None:
        if self._poll([self.checkpoint["clear"]], "Emptying the list before re-importing it"):
            self._goto("submit")

    def _step_submit(self) -> None:
        """Submit the next import chunk or removal batch; each activity id is stored as soon as
        CC returns it, so a restart resumes after the last accepted one."""
        clear = self.job.plan.get("strategy") == "clear_and_reimport"
        activities = self.checkpoint.setdefault("activities", [])
        imports_done = sum(1 for a in activities if a["kind"] == "import")
        removals_done = sum(1 for a in activities if a["kind"] == "remove")
        import_total = self.job.plan.get("import_calls", 0)
        removes = [] if clear else self._removes()
        removal_total = 0 if clear else -(-len(removes) // REMOVE_BATCH)
        total = import_total + removal_total + (1 if clear else 0)
        if imports_done < import_total:
            chunk = self._chunk(imports_done, whole_set=clear)
            answer = self.client.contacts_json_import(contacts=chunk, list_ids=[self.job.list_id])
            activities.append(
                self._record_activity("import", answer, chunk=imports_done, items=len(chunk))
            )
            label = f"Importing chunk {imports_done + 1} of {import_total}"
            self._save(
                progress=self._progress(
                    phase_label=label,
                    chunk=imports_done + 1,
                    chunks=import_total,
                    activities_total=total,
                    activities_done=0,
                )
            )
            return
        if removals_done < removal_total:
            batch = removes[removals_done * REMOVE_BATCH : (removals_done + 1) * REMOVE_BATCH]
            answer = self.client.list_memberships_remove(
                contact_ids=batch, list_ids=[self.job.list_id]
            )
            activities.append(
                self._record_activity("remove", answer, batch=removals_done, items=len(batch))
            )
            label = f"Removing batch {removals_done + 1} of {removal_total}"
            self._save(progress=self._progress(phase_label=label, activities_total=total))
            return
        self._schedule_first_poll()
        self._goto("wait_all", phase_label="Waiting for CC to finish", activities_total=total)

    def _step_wait_all(self) -> None:
        if self._poll(self.checkpoint.get("activities", []), "Waiting for CC to finish"):
            self._goto("finish")

    def _cc_rejected_rows(self, imports: list[dict[str, Any]]) -> list[RejectedRow]:
        """CC's per-row import errors, with the email of the row when the error names its
        index in the chunk (``import_data[3]: ...``)."""
        rows: list[RejectedRow] = []
        failing = [a for a in imports if a.get("errors")]
        if not failing:
            return rows
        clear = self.job.plan.get("strategy") == "clear_and_reimport"
        for activity in failing:
            chunk = self._chunk(int(activity.get("chunk", 0)), whole_set=clear)
            for error in activity["errors"]:
                text = _error_text(error)
                match = _IMPORT_INDEX.search(text)
                index = int(match.group(1)) if match else -1
                email = str(chunk[index]["email"]) if 0 <= index < len(chunk) else ""
                rows.append(RejectedRow(line=0, email=email, reason=text))
        return rows

    def _step_finish(self) -> None:
        plan = self.job.plan
        activities = self.checkpoint.get("activities", [])
        imports = [a for a in activities if a["kind"] == "import"]
        cannot_add = sum(
            int((a.get("status") or {}).get("cannot_add_to_list_count", 0) or 0) for a in imports
        )
        cc_errors = sum(int((a.get("status") or {}).get("error_count", 0) or 0) for a in imports)
        failed = [a for a in activities if a.get("state") != "completed"]
        folder = job_dir(self.job)
        _write_cc_rejects(folder / "rejected_cc.csv", self._cc_rejected_rows(imports))
        adds = plan.get("adds", 0)
        result = {
            "added": max(0, adds - cannot_add - cc_errors),
            "removed": plan.get("removes", 0),
            "unchanged": plan.get("unchanged", 0),
            "not_added_unsubscribed": cannot_add,
            "rejected_input_rows": (plan.get("input") or {}).get("rejected", 0),
            "rejected_by_cc": cc_errors,
            "failed_activities": len(failed),
        }
        state = JobState.COMPLETED if not failed else JobState.FAILED
        error = (
            ""
            if not failed
            else f"{len(failed)} CC activit{'y' if len(failed) == 1 else 'ies'} did not complete."
        )
        self._save(
            result=result,
            state=state,
            error=error,
            finished_at=timezone.now(),
            phase="done",
            progress=self._progress(
                phase_label="Done" if not failed else "Finished with failures",
                activities_done=len(activities),
                cc_percent=100,
            ),
        )


def _percent(activity: dict[str, Any]) -> float:
    if activity.get("state") in TERMINAL_ACTIVITY_STATES:
        return 100.0
    return float(activity.get("percent") or 0)


def _desired_csv_from_export(export_path: Path, desired_path: Path) -> None:
    """A source list's export becomes the desired CSV (email + names), streamed."""
    with (
        export_path.open(encoding="utf-8", newline="") as src,
        desired_path.open("w", encoding="utf-8", newline="") as dst,
    ):
        reader = csv.DictReader(src)
        lower = {name.lower().strip(): name for name in reader.fieldnames or []}
        email_col = lower.get("email address") or lower.get("email") or lower.get("email_address")
        first_col, last_col = lower.get("first name"), lower.get("last name")
        writer = csv.writer(dst)
        writer.writerow(["email", "first_name", "last_name"])
        for row in reader:
            if email_col and row.get(email_col):
                writer.writerow(
                    [
                        row[email_col],
                        row.get(first_col, "") if first_col else "",
                        row.get(last_col, "") if last_col else "",
                    ]
                )


def _write_cc_rejects(path: Path, rows: list[RejectedRow]) -> None:
    _write_rejected(path, rows)


def _error_text(error: Any) -> str:
    # The sandbox reports plain strings; CC's schema allows objects with a "message".
    if isinstance(error, dict):
        return str(error.get("message") or error.get("error_message") or error)
    return str(error)


def bulk_job_rejected_csv(job: BulkJob) -> str:
    """Input rows we rejected and rows CC rejected, as one CSV with the columns
    ``rejected_by,line,email,reason`` (every value formula-neutralised)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["rejected_by", "line", "email", "reason"])
    for who, name in (("file", "rejected_input.csv"), ("cc", "rejected_cc.csv")):
        path = job_dir(job) / name
        if not path.exists():
            continue
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                # CC names no line of the file, only the row's place in an import chunk.
                line = row.get("line", "") if who == "file" else ""
                writer.writerow([who, line, row.get("email", ""), row.get("reason", "")])
    return out.getvalue()


def bulk_job_retry_failed(*, job: BulkJob, user=None) -> BulkJob:
    """A new add-mode job for the rows CC rejected (those whose email is known)."""
    emails: list[str] = []
    path = job_dir(job) / "rejected_cc.csv"
    if path.exists():
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                email = (row.get("email") or "").strip().lstrip("'")
                if "@" in email:
                    emails.append(email)
    if not emails:
        raise BulkInputError("no rows to retry: CC rejected no rows that name an email address.")
    body = "email\n" + "\n".join(dict.fromkeys(emails)) + "\n"
    return bulk_job_create(
        account=job.account,
        list_id=job.list_id,
        list_name=job.list_name,
        mode=SyncMode.ADD,
        csv_chunks=iter([body.encode()]),
        user=user,
    )

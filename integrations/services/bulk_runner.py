"""Running a sync job: the worker's lease on it and the step state machine.

A job is a persisted state machine. Every step ends in a recovery point written to the
``BulkJob`` row (phase, checkpoint, activity ids the moment CC returns them), fenced by the
job's lease, so a job whose worker died is resumed by another worker from its last recovery
point. Steps that may repeat after a crash are idempotent at CC (an export, the import of the
same chunk into the same list, removing the same contacts), so a crash costs at most one
repeated idempotent step, never a lost or a contradictory effect.

Phases (:class:`~integrations.models.JobPhase`)::

    planning:  export_start → export_wait → export_download → [source_* for a list source]
               → diff → (state PLANNED, waiting for approval)
    running:   clear_start → clear_wait            (strategy clear_and_reimport only)
               → submit (imports + removal batches) → wait_all → finish

Every call goes through the gateway's ``background`` lane. CC's ``quota_exceeded`` pauses the
job until the UTC reset instead of failing it. When to poll is :mod:`.bulk_polling`.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError
from django.db.models import Q
from django.utils import timezone

from integrations import conf
from integrations.constant_contact.client import Activity
from integrations.constant_contact.errors import (
    CCActivityQueueFull,
    CCHTTPError,
    CCQuotaExceeded,
    CCServerError,
    CCTransportError,
    CCUnexpectedAnswer,
)
from integrations.constant_contact.limits import (
    ACTIVITIES_PAGE_MAX,
    ACTIVITY_TERMINAL_STATES,
    next_utc_midnight,
)
from integrations.crypto import DecryptionError
from integrations.models import ApiCall, BulkJob, JobPhase, JobState, Lane, SyncStrategy
from integrations.services import audit, gateway
from integrations.services.alert_rules import job_state_emit
from integrations.services.bulk_csv import DesiredSet, desired_from_csv
from integrations.services.bulk_files import JobFiles
from integrations.services.bulk_jobs import ClearNotCovered, cancel_note, job_finish, progress_dict
from integrations.services.bulk_polling import first_poll_schedule, next_poll_delay
from integrations.services.bulk_steps import STEPS, ActivityKeptFailing
from integrations.services.quota import (
    AccountCapReached,
    QuotaExhausted,
    QuotaStoreUnavailable,
)
from integrations.services.tokens import AccountNotConnected, TokenRefreshFailed

logger = logging.getLogger(__name__)

MAX_STEP_FAILURES = 5
# A worker sleeps in-process for short waits and hands longer ones back to the task queue.
MAX_INLINE_WAIT = 10.0
ACTIVITY_QUEUE_WAIT_SECONDS = 60.0


class JobLeaseLost(Exception):
    """Another worker took over this job; this one must stop touching it."""


@dataclass
class Advance:
    """What a run of :func:`bulk_job_advance` ended with."""

    state: str
    run_after: dt.datetime | None = None


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
    runner = JobRunner(job, owner=owner, on_progress=on_progress)
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
            outcome.run_after + dt.timedelta(seconds=min(30.0, conf.bulk_lease_seconds()))
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
        state__in=[*BulkJob.MOVING_STATES, JobState.PAUSED],
    ).update(
        lease_owner=owner,
        lease_expires_at=now + dt.timedelta(seconds=conf.bulk_lease_seconds()),
        heartbeat_at=now,
    )
    if not taken:
        return None
    return BulkJob.objects.select_related("account__api_key").get(pk=job_id)


class JobRunner:
    """Takes a leased job's steps, one recovery point after another."""

    def __init__(
        self, job: BulkJob, *, owner: str, on_progress: Callable[[BulkJob], None] | None
    ) -> None:
        self.job = job
        self.owner = owner
        self.on_progress = on_progress
        self.files = JobFiles(job.pk)
        self.client = gateway.cc_client(account=job.account, lane=Lane.BACKGROUND)
        self.checkpoint: dict[str, Any] = dict(job.checkpoint or {})
        self._desired: DesiredSet | None = None

    @property
    def clearing(self) -> bool:
        return self.job.strategy is SyncStrategy.CLEAR_AND_REIMPORT

    def desired_set(self) -> DesiredSet:
        # Parsed once per run: every import chunk of a run slices the same set.
        if self._desired is None:
            self._desired = desired_from_csv(self.files.desired)
        return self._desired

    def run(self, *, max_inline_wait: float) -> Advance:
        job = self.job
        if job.state in (JobState.PAUSED, JobState.QUEUED):
            if job.paused_until and job.paused_until > timezone.now():
                return Advance(state=job.state, run_after=job.paused_until)
            started = job.started_at or timezone.now()
            # A job paused while planning goes on planning.
            state = self.checkpoint.pop("paused_from", JobState.RUNNING)
            self.save(state=state, paused_until=None, started_at=started, error="")
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
            stopped = self._step()
            if stopped is not None:
                return stopped

    def _step(self) -> Advance | None:
        """Take the current phase's step; an Advance when the job must stop for now.

        What trouble means for the job: CC's daily quota pauses it until the reset; trouble
        that passes (CC or the network failing, our quota store, database or token endpoint
        unreachable, a key we cannot read yet) repeats the step with backoff and then pauses
        the job, which continues by itself a little later or when a person presses Resume — it
        never ends a job failed. An account that needs reconnecting pauses it until a person
        reconnects and resumes. Only a request CC refuses for good, or a fault no retry can
        mend, fails it.
        """
        try:
            with audit.calls_attributed_to(self.job):
                STEPS[self.job.phase](self)
            self.checkpoint.pop("failures", None)
        except (CCQuotaExceeded, QuotaExhausted) as exc:
            # retry_at is the reset plus the day guard: parking until then avoids spinning.
            reset = (
                getattr(exc, "retry_at", None)
                or getattr(exc, "reset_at", None)
                or next_utc_midnight()
            )
            reason = (
                f"{exc} The job resumes by itself then."
                if isinstance(exc, AccountCapReached)
                else f"CC's daily quota is spent; resumes after {reset:%Y-%m-%d %H:%M} UTC"
            )
            return self.pause(reason=reason, until=reset)
        except ClearNotCovered as exc:
            return self.pause(reason=str(exc), until=next_utc_midnight())
        except CCActivityQueueFull:
            self._wait(
                ACTIVITY_QUEUE_WAIT_SECONDS,
                "CC's activity queue for this account is full; waiting a minute",
            )
        except (CCTransportError, CCServerError, CCUnexpectedAnswer) as exc:
            return self._retry_later(f"Constant Contact did not answer as it should ({exc})")
        except (TokenRefreshFailed, QuotaStoreUnavailable, DatabaseError, DecryptionError) as exc:
            return self._retry_later(str(exc))
        except AccountNotConnected as exc:
            return self.pause(reason=f"{exc}. Reconnect the account, then press Resume.")
        except ActivityKeptFailing as exc:
            return self.pause(reason=f"{exc}. Press Resume to send it again.")
        except CCHTTPError as exc:
            self._fail(str(exc))
            return Advance(state=self.job.state)
        except JobLeaseLost:
            raise
        except Exception as exc:
            # A step that fails for a reason no retry can fix (its input file gone, a disk
            # error, a bug) fails the job once, visibly, instead of being recovered by the
            # watchdog and failing again forever.
            logger.exception("Bulk job %s stopped on an unexpected error", self.job.pk)
            self._fail(
                f"the job stopped on an unexpected error in step {self.job.phase} "
                f"({type(exc).__name__}: {exc}). Nothing more is sent for it."
            )
            return Advance(state=self.job.state)
        return None

    def _retry_later(self, reason: str) -> Advance | None:
        """Take the step again after a growing wait; after ``MAX_STEP_FAILURES`` tries in a
        row, pause the job, to continue by itself after ``CC_BULK_RESUME_AFTER``."""
        failures = self.checkpoint.get("failures", 0) + 1
        if failures >= MAX_STEP_FAILURES:
            self.checkpoint.pop("failures", None)
            until = timezone.now() + dt.timedelta(seconds=conf.bulk_resume_after_seconds())
            return self.pause(
                reason=f"{reason}. Tried {MAX_STEP_FAILURES} times; trying again at "
                f"{until:%H:%M} UTC, or press Resume",
                until=until,
            )
        self.checkpoint["failures"] = failures
        self._wait(min(conf.bulk_max_poll_delay(), 2.0 * 2**failures), f"{reason}; retrying")
        return None

    def pause(self, *, reason: str, until: dt.datetime | None = None) -> Advance:
        """Pause at the current step: by itself until ``until``, or (None) until a person
        presses Resume. The step is taken again from its recovery point."""
        if self.job.state != JobState.PAUSED:
            self.checkpoint["paused_from"] = self.job.state
            # Numbers the pause, so each one is alerted once (alert_rules.job_state_emit).
            self.checkpoint["pauses"] = self.checkpoint.get("pauses", 0) + 1
        self.save(
            state=JobState.PAUSED,
            paused_until=until,
            error=reason[:2000],
            progress=self.progress(phase_label=f"Paused: {reason}"),
        )
        job_state_emit(job=self.job)
        return Advance(state=JobState.PAUSED, run_after=until)

    def _sleep(self, seconds: float) -> None:
        deadline = time.time() + seconds
        while (left := deadline - time.time()) > 0:
            # Heartbeats well inside the lease keep other workers off while this one waits.
            time.sleep(min(left, conf.bulk_lease_seconds() / 3))
            self.save()

    def _refresh_cancel_flag(self) -> None:
        self.job.cancel_requested = (
            BulkJob.objects.filter(pk=self.job.pk).values_list("cancel_requested", flat=True).get()
        )

    # --- persistence (fenced by the lease) ---
    def save(self, **fields: Any) -> None:
        now = timezone.now()
        fields.setdefault("checkpoint", self.checkpoint)
        fields["calls_used"] = ApiCall.objects.filter(bulk_job=self.job).count()
        fields["heartbeat_at"] = now
        fields["lease_expires_at"] = now + dt.timedelta(seconds=conf.bulk_lease_seconds())
        fields["updated_at"] = now
        if not BulkJob.objects.filter(pk=self.job.pk, lease_owner=self.owner).update(**fields):
            raise JobLeaseLost(self.job.pk)
        for name, value in fields.items():
            setattr(self.job, name, value)
        if self.on_progress:
            self.on_progress(self.job)

    def progress(self, **values: Any) -> dict[str, Any]:
        kept = ("activities_total", "activities_done", "chunk", "chunks")
        base = {k: v for k, v in (self.job.progress or {}).items() if k in kept}
        return progress_dict(**{**base, **values})

    def goto(self, phase: JobPhase, **progress: Any) -> None:
        self.save(
            phase=phase, progress=self.progress(**progress) if progress else self.job.progress
        )

    def _wait(self, seconds: float, label: str) -> None:
        self.checkpoint["wait_until"] = time.time() + seconds
        self.save(progress=self.progress(phase_label=label))

    def _fail(self, message: str) -> None:
        logger.warning("Bulk job %s failed: %s", self.job.pk, message)
        self.save(
            **job_finish(JobState.FAILED, error=message[:2000]),
            progress=self.progress(phase_label="Failed"),
        )

    def _cancel(self) -> None:
        self.job.checkpoint = self.checkpoint
        self.save(
            **job_finish(JobState.CANCELLED, error=cancel_note(self.job)),
            progress=self.progress(phase_label="Cancelled"),
        )

    # --- activities and polling ---
    def poll(self, activities: list[dict[str, Any]], label: str) -> bool:
        """Refresh the state of ``activities`` (one GET /activities covers several);
        returns True when all are terminal, else schedules the next poll."""
        pending = [a for a in activities if not _finished(a)]
        if not pending:
            return True
        answers: dict[str, Activity]
        if len(pending) == 1:
            answers = {pending[0]["id"]: self.client.activity(pending[0]["id"])}
        else:
            limit = min(ACTIVITIES_PAGE_MAX, max(50, 2 * len(pending)))
            answers = {a.activity_id: a for a in self.client.activities(limit=limit)}
            for missing in [a for a in pending if a["id"] not in answers][:1]:
                answers[missing["id"]] = self.client.activity(missing["id"])
        for activity in pending:
            if answer := answers.get(activity["id"]):
                activity.update(_activity_facts(answer))
        done = sum(1 for a in activities if _finished(a))
        current = next((a for a in activities if not _finished(a)), None)
        if current is None:
            self.checkpoint.pop("poll_delay", None)
            self.checkpoint.pop("wait_until", None)
            self.save(
                progress=self.progress(
                    phase_label=label, activities_done=done, cc_state="completed", cc_percent=100
                )
            )
            return True
        wait, self.checkpoint["poll_delay"] = next_poll_delay(
            delay=float(self.checkpoint.get("poll_delay", conf.bulk_first_poll_delay())),
            max_delay=conf.bulk_max_poll_delay(),
            activities=activities,
            now=time.time(),
        )
        self.checkpoint["wait_until"] = time.time() + wait
        self.save(
            progress=self.progress(
                phase_label=label,
                activities_done=done,
                cc_state=current.get("state"),
                cc_percent=current.get("percent", 0),
            )
        )
        return False

    def schedule_first_poll(self) -> None:
        self.checkpoint["wait_until"], self.checkpoint["poll_delay"] = first_poll_schedule(
            now=time.time(), first_delay=conf.bulk_first_poll_delay()
        )

    def record_activity(self, kind: str, answer: Activity, **extra: Any) -> dict[str, Any]:
        return {
            "id": answer.activity_id,
            "kind": kind,
            "submitted_at": time.time(),
            **_activity_facts(answer),
            **extra,
        }


def _finished(activity: dict[str, Any]) -> bool:
    return activity.get("state") in ACTIVITY_TERMINAL_STATES


def _activity_facts(answer: Activity) -> dict[str, Any]:
    """What a job keeps of CC's answer about an activity (JSON for the checkpoint)."""
    facts: dict[str, Any] = {
        "state": answer.state,
        "percent": answer.percent_done,
        "status": answer.status,
        "errors": list(answer.errors[:200]),
    }
    if answer.results_href:
        facts["file_id"] = answer.file_export_id
    return facts

"""Bulk list-membership sync jobs: their phases, states and progress."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from integrations.models.accounts import ConnectedAccount
from integrations.models.usage import ApiCall


class SyncMode(models.TextChoices):
    REPLACE = "replace", "Replace: the list becomes exactly the desired set"
    ADD = "add", "Add: add the desired contacts, remove nobody"


class SyncStrategy(models.TextChoices):
    """How a replace sync removes the members the desired set leaves out."""

    BATCHES = "batches", "Import the additions, then remove members in batches of 500"
    CLEAR_AND_REIMPORT = "clear_and_reimport", "Empty the list, then re-import the desired set"


class JobPhase(models.TextChoices):
    """The step a sync job takes next; each ends in a recovery point on the job's row."""

    EXPORT_START = "export_start", "Exporting the list"
    EXPORT_WAIT = "export_wait", "Waiting for the export"
    EXPORT_DOWNLOAD = "export_download", "Downloading the export"
    SOURCE_EXPORT_START = "source_export_start", "Exporting the source list"
    SOURCE_EXPORT_WAIT = "source_export_wait", "Waiting for the source export"
    SOURCE_EXPORT_DOWNLOAD = "source_export_download", "Downloading the source export"
    DIFF = "diff", "Planning"
    AWAITING_APPROVAL = "awaiting_approval", "Waiting for approval"
    CLEAR_START = "clear_start", "Emptying the list"
    CLEAR_WAIT = "clear_wait", "Waiting for the list to empty"
    SUBMIT = "submit", "Submitting imports and removals"
    WAIT_ALL = "wait_all", "Waiting for Constant Contact"
    FINISH = "finish", "Finishing"
    DONE = "done", "Done"


class JobState(models.TextChoices):
    DRAFT = "draft", "Draft"
    PLANNING = "planning", "Planning"
    PLANNED = "planned", "Planned"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


def duration_text(seconds: float) -> str:
    """A span of time as people say it: "45 s", "2 min 14 s", "1 h 5 min", "2 d 3 h"."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    units = (("d", 86_400), ("h", 3_600), ("min", 60), ("s", 1))
    parts: list[str] = []
    for name, size in units:
        count, whole = divmod(whole, size)
        if count or parts:
            parts.append(f"{count} {name}")
        if len(parts) == 2:
            break
    # "1 h 0 min" reads as "1 h".
    return " ".join(part for part in parts if not part.startswith("0 ")) or parts[0]


def plan_calls_planned(plan: dict[str, Any], strategy: str | None = None) -> int:
    """Every call a planned job makes when run with ``strategy`` (the plan's own by default).

    Once the export is done (the plan holds ``planning_calls``): the calls planning made, counted
    as they went, plus what the plan still needs — imports, removals and their expected status
    polls (``calls_after_export``). Before that, the plan's whole estimate (``total_calls``).
    """
    chosen = strategy or plan.get("strategy")
    option = (plan.get("options") or {}).get(chosen) or plan
    if "planning_calls" not in plan:
        return int(option.get("total_calls", 0))
    return int(plan["planning_calls"]) + int(option.get("calls_after_export", 0))


class BulkJobQuerySet(models.QuerySet):
    def with_calls_made(self) -> BulkJobQuerySet:
        """Each job with ``calls_made`` counted in the same query (one subquery per row)."""
        calls = (
            ApiCall.objects.filter(bulk_job=OuterRef("pk"))
            .order_by()
            .values("bulk_job")
            .annotate(n=Count("pk"))
            .values("n")
        )
        return self.annotate(calls_made_count=Coalesce(Subquery(calls), 0))


class BulkJob(models.Model):
    """Make CC list ``list_id`` contain the desired contacts, via export + diff + bulk imports.

    Every step ends in a recovery point stored here (phase, step data, activity ids), so a job
    whose worker died is resumed by another without repeating effects.
    """

    TERMINAL_STATES = (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)
    #: States in which a worker is (or is about to be) working on the job.
    MOVING_STATES = (JobState.PLANNING, JobState.QUEUED, JobState.RUNNING)
    #: Started and not ended: what the dashboard lists as running or paused.
    IN_PROGRESS_STATES = (*MOVING_STATES, JobState.PAUSED)

    account = models.ForeignKey(
        ConnectedAccount, on_delete=models.CASCADE, related_name="bulk_jobs"
    )
    list_id = models.CharField(max_length=64)
    list_name = models.CharField(max_length=255, blank=True)
    mode = models.CharField(max_length=10, choices=SyncMode.choices, default=SyncMode.REPLACE)
    source_file = models.CharField(max_length=500, blank=True)
    source_list_id = models.CharField(max_length=64, blank=True)
    state = models.CharField(max_length=12, choices=JobState.choices, default=JobState.DRAFT)
    phase = models.CharField(max_length=40, blank=True, choices=JobPhase.choices)
    plan = models.JSONField(default=dict, blank=True)
    progress = models.JSONField(default=dict, blank=True)
    checkpoint = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    calls_planned = models.PositiveIntegerField(default=0)
    calls_used = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    paused_until = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = BulkJobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "updated_at"])]

    def __str__(self) -> str:
        return f"sync {self.list_name or self.list_id} ({self.get_state_display()})"

    @property
    def is_finished(self) -> bool:
        return self.state in self.TERMINAL_STATES

    @property
    def is_moving(self) -> bool:
        """A worker is, or is about to be, taking its steps."""
        return self.state in self.MOVING_STATES

    @property
    def is_live(self) -> bool:
        """Its page keeps refreshing: it moves, or may move again by itself (paused)."""
        return self.is_moving or self.state == JobState.PAUSED

    @property
    def is_scheduled(self) -> bool:
        """Approved to run later (after the daily reset)."""
        return (
            self.state == JobState.QUEUED
            and self.paused_until is not None
            and self.paused_until > timezone.now()
        )

    @property
    def strategy(self) -> SyncStrategy | None:
        value = (self.plan or {}).get("strategy")
        return SyncStrategy(value) if value in SyncStrategy.values else None

    @property
    def can_run(self) -> bool:
        return self.state == JobState.PLANNED

    @property
    def can_schedule(self) -> bool:
        """Planned, and today's budget does not cover it: it can wait for the reset."""
        return self.can_run and not (self.plan or {}).get("fits_today", True)

    @property
    def can_resume(self) -> bool:
        return self.state == JobState.PAUSED

    @property
    def can_cancel(self) -> bool:
        return not self.is_finished and not self.cancel_requested

    @property
    def can_retry_rejected(self) -> bool:
        """Constant Contact rejected rows that a new add-mode job can try again."""
        return bool((self.result or {}).get("rejected_by_cc"))

    # --- the calls it needs and the calls it made ------------------------------------------------
    @property
    def calls_made(self) -> int:
        """Calls made for this job: its ``ApiCall`` rows, every attempt, as the call log lists
        them under "Calls of this job" (``calls_used`` is the runner's copy of the same count,
        refreshed at each recovery point). Counted in the query by
        ``BulkJob.objects.with_calls_made()``, else here."""
        annotated = getattr(self, "calls_made_count", None)
        if annotated is not None:
            return int(annotated)
        if self.pk is None:
            return 0
        return ApiCall.objects.filter(bulk_job=self).count()

    @property
    def has_plan(self) -> bool:
        return bool((self.plan or {}).get("strategy"))

    def calls_planned_for(self, strategy: str | None = None) -> int:
        """Every call the job makes when run with ``strategy`` (:func:`plan_calls_planned`):
        the figure ``calls_planned`` holds once the job is planned, and again once approved."""
        return plan_calls_planned(self.plan or {}, strategy)

    @property
    def calls_planned_by_strategy(self) -> dict[str, int]:
        """``calls_planned_for`` each strategy the plan offers, for the plan form's choices."""
        return {name: self.calls_planned_for(name) for name in (self.plan or {}).get("options", {})}

    @property
    def calls_text(self) -> str:
        """How many calls it made against its plan: "6 of 10 planned calls used"; once past
        the plan (CC took longer than expected, so more status polls) "11 calls used (10
        planned)"; before a plan, "6 calls used"."""
        made, planned = self.calls_made, self.calls_planned
        used = f"{made:,} call{'' if made == 1 else 's'} used"
        if not planned:
            return used
        if made > planned:
            return f"{used} ({planned:,} planned)"
        return f"{made:,} of {planned:,} planned calls used"

    # --- when it ran ------------------------------------------------------------------------------
    @property
    def is_planning_stage(self) -> bool:
        """Still exporting and diffing (paused while doing so included), or ended before it
        was ever run."""
        if self.state in (JobState.DRAFT, JobState.PLANNING):
            return True
        if self.state == JobState.PAUSED:
            return (self.checkpoint or {}).get("paused_from") == JobState.PLANNING
        return self.is_finished and self.started_at is None

    @property
    def clock_started_at(self) -> dt.datetime | None:
        """Where its clock starts: the run's start, or while (and when only) planning, its
        creation; None while it waits to run."""
        if self.is_planning_stage:
            return self.created_at
        return self.started_at

    @property
    def duration(self) -> dt.timedelta | None:
        """How long it took: from the start of its run (of its planning, when it never ran) to
        its end; None until it has ended."""
        start = self.clock_started_at
        if not self.is_finished or self.finished_at is None or start is None:
            return None
        return max(dt.timedelta(0), self.finished_at - start)

    @property
    def duration_text(self) -> str:
        """``duration`` as people say it ("2 min 14 s"); empty until it has ended."""
        duration = self.duration
        return "" if duration is None else duration_text(duration.total_seconds())

    def elapsed(self, *, now: dt.datetime | None = None) -> dt.timedelta | None:
        """How long it has been going (its duration once ended); None before it started."""
        if self.is_finished:
            return self.duration
        start = self.clock_started_at
        if start is None:
            return None
        return max(dt.timedelta(0), (now or timezone.now()) - start)

    @property
    def progress_updated_at(self) -> dt.datetime | None:
        """When the worker last wrote its progress record."""
        stamp: Any = (self.progress or {}).get("updated")
        if not isinstance(stamp, int | float) or not math.isfinite(stamp):
            return None
        return dt.datetime.fromtimestamp(stamp, tz=dt.UTC)

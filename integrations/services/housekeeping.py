"""Housekeeping the periodic worker does: what ccportal keeps, and for how long.

* a finished job's files (the upload, CC's exports, rejected rows) go ``CC_BULK_FILES_DAYS``
  after the job ended;
* calls leave the call log after ``CC_CALL_LOG_DAYS``, deleted in bounded batches so the
  database never holds a long write lock; the hourly and daily rollups the dashboard reads
  stay :data:`ROLLUP_DAYS`;
* workers not seen for a day are forgotten.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from django.utils import timezone

from integrations import conf
from integrations.models import ApiCall, BulkJob, DailyUsage, HourlyUsage
from integrations.services.bulk_files import JobFiles, job_folders
from integrations.services.workers import workers_prune

logger = logging.getLogger(__name__)

#: How long the usage rollups are kept (a year of daily figures, and then some).
ROLLUP_DAYS = 400
#: Calls deleted per statement, and the most statements one run issues.
PRUNE_BATCH = 5_000
PRUNE_MAX_BATCHES = 40


@dataclass(frozen=True)
class HousekeepingReport:
    job_folders_removed: int
    calls_pruned: int
    #: More calls are past their time than one run deletes: run again soon.
    calls_remaining: bool
    rollups_pruned: int
    workers_forgotten: int

    def __str__(self) -> str:
        return (
            f"{self.job_folders_removed} job folder(s) removed, {self.calls_pruned:,} call(s) "
            f"pruned{' (more to go)' if self.calls_remaining else ''}, "
            f"{self.rollups_pruned:,} rollup row(s) pruned, "
            f"{self.workers_forgotten} worker(s) forgotten"
        )


def housekeeping_run(*, now: dt.datetime | None = None) -> HousekeepingReport:
    """Do one round of housekeeping; each part is bounded, so a run takes seconds at most."""
    now = now or timezone.now()
    calls_pruned, calls_remaining = calls_prune(
        before=now - dt.timedelta(days=conf.call_log_days())
    )
    report = HousekeepingReport(
        job_folders_removed=job_files_expire(now=now),
        calls_pruned=calls_pruned,
        calls_remaining=calls_remaining,
        rollups_pruned=rollups_prune(before=now - dt.timedelta(days=ROLLUP_DAYS)),
        workers_forgotten=workers_prune(),
    )
    if report.job_folders_removed or report.calls_pruned or report.rollups_pruned:
        logger.info("Housekeeping: %s.", report)
    return report


def job_files_expire(*, now: dt.datetime | None = None) -> int:
    """Remove the folders of jobs that ended more than ``CC_BULK_FILES_DAYS`` ago (and of
    jobs deleted since, once the folder is as old). Returns how many folders went."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(days=conf.bulk_files_days())
    on_disk = job_folders()
    if not on_disk:
        return 0
    jobs = {
        pk: (state, finished_at or updated_at)
        for pk, state, finished_at, updated_at in BulkJob.objects.filter(
            pk__in=on_disk
        ).values_list("pk", "state", "finished_at", "updated_at")
    }
    removed = 0
    for job_id in on_disk:
        files = JobFiles(job_id)
        if job_id in jobs:
            state, ended = jobs[job_id]
            expired = state in BulkJob.TERMINAL_STATES and ended <= cutoff
        else:
            # A folder whose job is gone; a young one may belong to a job still being created.
            expired = files.modified_at() <= cutoff
        if expired:
            files.remove()
            removed += 1
    return removed


def calls_prune(*, before: dt.datetime) -> tuple[int, bool]:
    """Delete calls made before ``before``, oldest first, at most
    ``PRUNE_BATCH * PRUNE_MAX_BATCHES`` of them. Returns (deleted, whether more remain)."""
    old = ApiCall.objects.filter(created_at__lt=before)
    deleted = 0
    for _ in range(PRUNE_MAX_BATCHES):
        ids = list(old.order_by("created_at").values_list("pk", flat=True)[:PRUNE_BATCH])
        if not ids:
            return deleted, False
        count, _ = ApiCall.objects.filter(pk__in=ids).delete()
        deleted += count
    return deleted, old.exists()


def rollups_prune(*, before: dt.datetime) -> int:
    """Delete hourly and daily usage rows older than ``before``."""
    hourly, _ = HourlyUsage.objects.filter(hour__lt=before).delete()
    daily, _ = DailyUsage.objects.filter(date__lt=before.date()).delete()
    return hourly + daily

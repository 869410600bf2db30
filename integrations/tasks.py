"""Thin Django Tasks entry points: ids in, one service call, and the follow-up scheduling."""

from __future__ import annotations

import datetime as dt

from django.db.models import Q
from django.utils import timezone
from django_tasks import task

from integrations.services import bulk
from integrations.services.tokens import tokens_keep_alive

KEEPALIVE_EVERY = dt.timedelta(hours=12)


@task()
def tokens_keep_alive_task() -> int:
    """Exercise idle refresh tokens, then schedule the next run."""
    refreshed = len(tokens_keep_alive())
    tokens_keep_alive_task.using(run_after=timezone.now() + KEEPALIVE_EVERY).enqueue()
    return refreshed


@task()
def bulk_job_run_task(job_id: int) -> str:
    """Advance a sync job; when it must wait long, continue it later from the queue."""
    outcome = bulk.bulk_job_advance(job_id=job_id)
    if outcome.run_after is not None:
        bulk_job_run_task.using(run_after=outcome.run_after).enqueue(job_id)
    return outcome.state


@task()
def bulk_jobs_watchdog_task() -> int:
    """Re-enqueue jobs whose worker died (their lease expired), then run again shortly."""
    job_ids = bulk.bulk_jobs_recoverable()
    for job_id in job_ids:
        bulk_job_run_task.enqueue(job_id)
    every = dt.timedelta(seconds=bulk.watchdog_every_seconds())
    bulk_jobs_watchdog_task.using(run_after=timezone.now() + every).enqueue()
    return len(job_ids)


def bulk_job_enqueue(job_id: int, *, run_after: dt.datetime | None = None) -> None:
    """Hand a job to the workers (and make sure the watchdog chain is alive)."""
    task_ = bulk_job_run_task.using(run_after=run_after) if run_after else bulk_job_run_task
    task_.enqueue(job_id)
    periodic_tasks_ensure_scheduled()


def periodic_tasks_ensure_scheduled() -> None:
    """Start each self-rescheduling chain unless a run of it is already waiting."""
    from django_tasks.base import TaskResultStatus
    from django_tasks_db.models import DBTaskResult

    # A run still RUNNING long after it started belonged to a worker that died. The watchdog
    # takes milliseconds; the keep-alive may wait on the token endpoint's 1/s for a while.
    chains = [
        (tokens_keep_alive_task, dt.timedelta(minutes=2)),
        (bulk_jobs_watchdog_task, dt.timedelta(seconds=max(10.0, 2 * bulk.lease_seconds()))),
    ]
    for chain, stale in chains:
        recent = timezone.now() - stale
        waiting = DBTaskResult.objects.filter(task_path=chain.module_path).filter(
            Q(status=TaskResultStatus.READY)
            | Q(status=TaskResultStatus.RUNNING, started_at__gt=recent)
        )
        if not waiting.exists():
            chain.enqueue()

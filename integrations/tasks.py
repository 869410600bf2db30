"""Thin Django Tasks entry points: ids in, one service call, and the follow-up scheduling."""

from __future__ import annotations

import datetime as dt

from django.db.models import Q
from django.utils import timezone
from django_tasks import task

from integrations import conf
from integrations.services.alert_rules import alerts_evaluate
from integrations.services.alerts import alert_deliveries_due, alert_deliveries_send
from integrations.services.bulk_jobs import bulk_jobs_recoverable
from integrations.services.bulk_runner import bulk_job_advance
from integrations.services.housekeeping import housekeeping_run
from integrations.services.tokens import tokens_keep_alive
from integrations.services.workers import HEARTBEAT_EVERY, worker_beat

KEEPALIVE_EVERY = dt.timedelta(hours=12)
HOUSEKEEPING_EVERY = dt.timedelta(hours=1)
#: When a run left old calls behind (it deletes in bounded batches), the next comes soon.
HOUSEKEEPING_BACKLOG_EVERY = dt.timedelta(minutes=1)


@task()
def tokens_keep_alive_task() -> int:
    """Exercise idle refresh tokens, then schedule the next run."""
    refreshed = len(tokens_keep_alive())
    tokens_keep_alive_task.using(run_after=timezone.now() + KEEPALIVE_EVERY).enqueue()
    return refreshed


@task()
def bulk_job_run_task(job_id: int) -> str:
    """Advance a sync job; when it must wait long, continue it later from the queue."""
    outcome = bulk_job_advance(job_id=job_id)
    if outcome.run_after is not None:
        bulk_job_run_task.using(run_after=outcome.run_after).enqueue(job_id)
    return outcome.state


@task()
def bulk_jobs_watchdog_task() -> int:
    """Re-enqueue jobs whose worker died (their lease expired), then run again shortly."""
    job_ids = bulk_jobs_recoverable()
    for job_id in job_ids:
        bulk_job_run_task.enqueue(job_id)
    every = dt.timedelta(seconds=conf.bulk_watchdog_every_seconds())
    bulk_jobs_watchdog_task.using(run_after=timezone.now() + every).enqueue()
    return len(job_ids)


@task()
def housekeeping_task() -> str:
    """Delete expired job files, old calls and rollups, then schedule the next round."""
    report = housekeeping_run()
    every = HOUSEKEEPING_BACKLOG_EVERY if report.calls_remaining else HOUSEKEEPING_EVERY
    housekeeping_task.using(run_after=timezone.now() + every).enqueue()
    return str(report)


@task()
def worker_heartbeat_task() -> str:
    """Record that a worker is taking tasks, then beat again shortly."""
    beat = worker_beat()
    worker_heartbeat_task.using(run_after=timezone.now() + HEARTBEAT_EVERY).enqueue()
    return beat.worker


@task()
def alerts_evaluate_task() -> int:
    """Record the alert events the state shows, hand due deliveries to a worker, then look
    again shortly."""
    emitted = len(alerts_evaluate())
    if alert_deliveries_due():
        alerts_deliver_task.enqueue()
    every = dt.timedelta(seconds=conf.alerts_evaluate_every_seconds())
    alerts_evaluate_task.using(run_after=timezone.now() + every).enqueue()
    return emitted


@task()
def alerts_deliver_task() -> int:
    """Send the alert deliveries whose time has come."""
    return alert_deliveries_send()


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
        (
            bulk_jobs_watchdog_task,
            dt.timedelta(seconds=max(10.0, 2 * conf.bulk_lease_seconds())),
        ),
        (worker_heartbeat_task, dt.timedelta(minutes=1)),
        (alerts_evaluate_task, dt.timedelta(minutes=2)),
        (housekeeping_task, dt.timedelta(minutes=10)),
    ]
    for chain, stale in chains:
        recent = timezone.now() - stale
        waiting = DBTaskResult.objects.filter(task_path=chain.module_path).filter(
            Q(status=TaskResultStatus.READY)
            | Q(status=TaskResultStatus.RUNNING, started_at__gt=recent)
        )
        if not waiting.exists():
            chain.enqueue()

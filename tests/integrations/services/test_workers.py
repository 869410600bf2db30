"""Worker heartbeats, and the periodic chains that keep them (and the watchdog) going."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from integrations.models import WorkerHeartbeat
from integrations.services.workers import worker_beat, worker_name, workers_prune
from integrations.tasks import periodic_tasks_ensure_scheduled, worker_heartbeat_task

pytestmark = pytest.mark.django_db


def test_a_beat_records_the_worker_and_counts_its_beats():
    first = worker_beat()
    second = worker_beat()

    assert first.worker == second.worker == worker_name()
    assert second.beats == 2
    assert second.seen_at >= first.seen_at
    assert WorkerHeartbeat.objects.count() == 1


def test_workers_gone_for_a_day_are_forgotten_and_live_ones_kept():
    worker_beat("gone:1")
    WorkerHeartbeat.objects.filter(worker="gone:1").update(
        seen_at=timezone.now() - dt.timedelta(days=2)
    )
    worker_beat("alive:2")

    assert workers_prune() == 1
    assert list(WorkerHeartbeat.objects.values_list("worker", flat=True)) == ["alive:2"]


def test_the_heartbeat_task_beats_and_schedules_its_next_run():
    worker_heartbeat_task.call()

    assert WorkerHeartbeat.objects.get(worker=worker_name()).beats == 1
    waiting = DBTaskResult.objects.filter(task_path=worker_heartbeat_task.module_path)
    assert waiting.count() == 1
    assert waiting.get().run_after > timezone.now()


def test_each_chain_is_scheduled_once_however_often_it_is_ensured():
    periodic_tasks_ensure_scheduled()
    periodic_tasks_ensure_scheduled()

    paths = list(DBTaskResult.objects.values_list("task_path", flat=True))
    assert paths.count(worker_heartbeat_task.module_path) == 1
    assert len(paths) == len(set(paths))

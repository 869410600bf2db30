"""The workers' heartbeats: proof that something is taking tasks off the queue."""

from __future__ import annotations

import datetime as dt

from django.db import models
from django.utils import timezone


class WorkerHeartbeat(models.Model):
    """The last time a worker process ran its heartbeat task.

    The heartbeat is itself a task, so a beat means a worker took a task off the queue and ran
    it, not merely that a process is alive. One row per worker (``host:pid``); rows of workers
    gone for a day are pruned by the housekeeping task.
    """

    worker = models.CharField(max_length=200, unique=True, help_text="host:pid")
    started_at = models.DateTimeField(default=timezone.now)
    seen_at = models.DateTimeField(default=timezone.now, db_index=True)
    beats = models.PositiveBigIntegerField(default=0)

    class Meta:
        verbose_name = "worker heartbeat"
        ordering = ["-seen_at"]

    def __str__(self) -> str:
        return self.worker

    def seen_within(self, window: dt.timedelta) -> bool:
        return self.seen_at >= timezone.now() - window

"""Worker heartbeats: each worker records that it is taking tasks; the doctor reads them."""

from __future__ import annotations

import datetime as dt
import os
import socket

from django.db.models import F
from django.utils import timezone

from integrations.models import WorkerHeartbeat

#: How often a worker beats; a worker not seen for three beats is missing.
HEARTBEAT_EVERY = dt.timedelta(seconds=30)
HEARTBEAT_MISSING_AFTER = 3 * HEARTBEAT_EVERY


def worker_name() -> str:
    """This process as a worker: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_beat(worker: str | None = None) -> WorkerHeartbeat:
    """Record a beat of ``worker`` (this process unless named)."""
    name = worker or worker_name()
    now = timezone.now()
    updated = WorkerHeartbeat.objects.filter(worker=name).update(seen_at=now, beats=F("beats") + 1)
    if not updated:
        WorkerHeartbeat.objects.get_or_create(
            worker=name, defaults={"started_at": now, "seen_at": now, "beats": 1}
        )
    return WorkerHeartbeat.objects.get(worker=name)


def workers_prune(*, older_than: dt.timedelta = dt.timedelta(days=1)) -> int:
    """Forget workers not seen for ``older_than``; returns how many rows went."""
    deleted, _ = WorkerHeartbeat.objects.filter(seen_at__lt=timezone.now() - older_than).delete()
    return deleted

"""Run ccportal code in real OS processes against the test database and the live sandbox.

A ``spawn`` pool whose workers set Django up exactly like the test process (same settings
module, same ``var`` folder and so the same encryption keys), then switch to the test database
the parent uses and apply the parent's settings overrides (sandbox URLs, quota store).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from typing import Any

from django.db import connection


def _init(database_name: str, overrides: dict[str, Any]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ccportal.settings_test")
    import django
    from django.conf import settings

    django.setup()
    settings.DATABASES["default"]["NAME"] = database_name
    for name, value in overrides.items():
        setattr(settings, name, value)
    from django.db import connection as child_connection

    child_connection.ensure_connection()


def process_pool(processes: int, overrides: dict[str, Any] | None = None):
    """A pool of ``processes`` spawned workers ready to run ORM code on the test database."""
    from django.conf import settings

    names = ["CC_QUOTA_STORE", "REDIS_URL", "CC_TOKEN_LEASE_SECONDS", "CC_TOKEN_REFRESH_SKEW"]
    inherited = {n: getattr(settings, n) for n in names if hasattr(settings, n)}
    context = multiprocessing.get_context("spawn")
    return context.Pool(
        processes,
        initializer=_init,
        initargs=(connection.settings_dict["NAME"], {**inherited, **(overrides or {})}),
    )


def at(start: float, work: Callable[[], Any]) -> Any:
    """Sleep until the shared ``start`` time, then run ``work`` (so processes really race)."""
    delay = start - time.time()
    if delay > 0:
        time.sleep(delay)
    return work()

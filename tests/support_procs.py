"""Run ccportal code in real OS processes against the test database and the live sandbox.

A ``spawn`` pool whose workers set Django up exactly like the test process (same settings
module, same ``var`` folder and so the same encryption keys), then switch to the test database
the parent uses and apply the parent's settings overrides (sandbox URLs, quota store).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from django.db import connection

# What configures a portal: none of it is inherited by a portal started from scratch.
PORTAL_VARIABLES = ("CC_", "CCPORTAL_", "DJANGO_", "DATABASE_URL", "REDIS_URL", "LOG_LEVEL")


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

    names = [
        "CC_QUOTA_STORE",
        "REDIS_URL",
        "CC_TOKEN_LEASE_SECONDS",
        "CC_TOKEN_REFRESH_SKEW",
        "CC_TOKEN_REQUESTS_PER_SECOND",
    ]
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


def fresh_portal_env(var_dir: Path | str, **env: str) -> dict[str, str]:
    """The environment of a portal started from scratch with its files in ``var_dir``: this
    process's environment without any portal setting, the production settings module, and
    ``env``."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(PORTAL_VARIABLES)}
    return {
        **inherited,
        "DJANGO_SETTINGS_MODULE": "ccportal.settings",
        "CCPORTAL_VAR_DIR": str(var_dir),
        **env,
    }


@contextlib.contextmanager
def slots_booked(module: Any, name: str) -> Iterator[list[float]]:
    """Inside the block, the ``send_at`` of every reservation ``module.name`` returns is added
    to the list yielded (epoch seconds on the ledger's clock); ``module.name`` is put back on
    the way out. The code under test must look ``name`` up on ``module`` at each call."""
    reserve = getattr(module, name)
    booked: list[float] = []

    def recorded(**kwargs: Any) -> Any:
        reservation = reserve(**kwargs)
        booked.append(reservation.send_at)
        return reservation

    setattr(module, name, recorded)
    try:
        yield booked
    finally:
        setattr(module, name, reserve)

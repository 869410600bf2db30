"""What the benchmarks share: a throw-away portal's environment, and Django in a spawned process."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def portal_environment(var_dir: str, *, sandbox_url: str | None = None) -> dict[str, str]:
    """Settings of a portal whose files live in ``var_dir``: a SQLite database there, the
    database quota store, no Redis, and (given its URL) the sandbox as Constant Contact."""
    env = {
        "DJANGO_SETTINGS_MODULE": "ccportal.settings",
        "DJANGO_ENV": "development",
        "DEBUG": "false",
        "CCPORTAL_VAR_DIR": var_dir,
        "DATABASE_URL": f"sqlite:///{Path(var_dir) / 'bench.sqlite3'}",
        "CC_QUOTA_STORE": "integrations.services.quota_stores.DatabaseStore",
        "REDIS_URL": "",
        "LOG_LEVEL": "WARNING",
    }
    if sandbox_url:
        env.update(CC_MODE="sandbox", CC_SANDBOX_URL=sandbox_url)
    return env


def django_setup(env: dict[str, str]) -> None:
    """Apply ``env`` and set Django up (in a process spawned by a benchmark)."""
    os.environ.update(env)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import django

    django.setup()


def portal_ready(env: dict[str, str]) -> None:
    """Set Django up on ``env`` and create its tables (a fresh portal, as ``make run`` does)."""
    django_setup(env)
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)

"""Test overlay: the real settings, made fast and isolated.

``DATABASE_URL`` and ``REDIS_URL`` still come from the environment, so CI's second pass runs the
same suite on PostgreSQL + Redis.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid

os.environ.setdefault("DJANGO_ENV", "test")
if "CCPORTAL_VAR_DIR" not in os.environ:
    # This process owns the run's folder (child processes inherit it through the environment)
    # and leaves nothing behind in the temp directory.
    os.environ["CCPORTAL_VAR_DIR"] = tempfile.mkdtemp(prefix="ccportal-test-")
    atexit.register(shutil.rmtree, os.environ["CCPORTAL_VAR_DIR"], ignore_errors=True)
# A parallel run (pytest-xdist, `make test`) gives each worker its own folder inside the run's:
# its own SQLite file, job files and encryption keys. Its child processes inherit the folder.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if _WORKER and os.path.basename(os.environ["CCPORTAL_VAR_DIR"]) != _WORKER:
    os.environ["CCPORTAL_VAR_DIR"] = os.path.join(os.environ["CCPORTAL_VAR_DIR"], _WORKER)
    os.makedirs(os.environ["CCPORTAL_VAR_DIR"], exist_ok=True)

from ccportal.settings import *  # noqa: E402, F403
from ccportal.settings import CACHES, DATABASES  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEBUG = False
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not :memory:, so tests can hand the database to real OS processes.
    DATABASES["default"]["TEST"] = {
        "NAME": os.path.join(os.environ["CCPORTAL_VAR_DIR"], "test.sqlite3")
    }
# Child processes inherit the run's id through the environment and share its Redis keys.
os.environ.setdefault("CCPORTAL_TEST_RUN", uuid.uuid4().hex[:12])
# Each run, and each worker of a parallel run, keeps its own Redis keys: its own ledger, and a
# cache whose clear() forgets only its own keys (never another worker's, never FLUSHDB).
_REDIS_SCOPE = f"ccportal-test:{os.environ['CCPORTAL_TEST_RUN']}:{_WORKER or 'main'}"
CC_QUOTA_REDIS_PREFIX = f"{_REDIS_SCOPE}:"
if "redis" in CACHES:
    CACHES["redis"]["BACKEND"] = "tests.support_cache.ScopedRedisCache"
    CACHES["redis"]["KEY_PREFIX"] = _REDIS_SCOPE

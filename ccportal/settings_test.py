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

from ccportal.settings import *  # noqa: F403
from ccportal.settings import DATABASES

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEBUG = False
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not :memory:, so tests can hand the database to real OS processes.
    DATABASES["default"]["TEST"] = {
        "NAME": os.path.join(os.environ["CCPORTAL_VAR_DIR"], "test.sqlite3")
    }
# Each run keeps its own Redis ledger, so one run's bookings never leak into the next; child
# processes inherit the run's id through the environment and share the ledger.
os.environ.setdefault("CCPORTAL_TEST_RUN", uuid.uuid4().hex[:12])
CC_QUOTA_REDIS_PREFIX = f"ccportal-test:{os.environ['CCPORTAL_TEST_RUN']}:"

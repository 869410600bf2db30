"""Settings of a ``db_worker`` child spawned by the bulk tests: the test settings, pointed at the
parent's test database and sandbox by the JSON in ``CCPORTAL_CHILD_SETTINGS``.

``ccportal.settings`` reads the database and Redis URLs from the environment but not the quota
ledger's prefix or the bulk engine's timings, so the parent hands over its values here.
"""

from __future__ import annotations

import json
import os

from ccportal.settings_test import *  # noqa: F403
from ccportal.settings_test import DATABASES

for _name, _value in json.loads(os.environ.get("CCPORTAL_CHILD_SETTINGS", "{}")).items():
    if _name == "DATABASE":
        DATABASES["default"] = {**DATABASES["default"], **_value, "TEST": {}}
    else:
        globals()[_name] = _value

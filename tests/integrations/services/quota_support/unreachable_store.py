"""Run in a fresh process whose store cannot be reached; prints what the caller would see.

DATABASE_URL=postgres://...:<closed port>/x python -m <this module>
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ccportal.settings_test")

import django

django.setup()

from integrations.models import ApiKey, Tier  # noqa: E402
from integrations.services.quota import quota_acquire  # noqa: E402

api_key = ApiKey(pk=1, name="Down", client_id="down-key", tier=Tier.STANDARD)
try:
    quota_acquire(api_key=api_key)
except Exception as exc:  # the test asserts which type arrived
    print(json.dumps({"type": type(exc).__name__, "message": str(exc)}))
else:
    print(json.dumps({"type": None, "message": "a slot was granted"}))

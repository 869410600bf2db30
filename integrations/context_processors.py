from __future__ import annotations

from django.http import HttpRequest

from integrations import conf
from integrations.services.health import outages


def portal(request: HttpRequest) -> dict:
    return {"cc_mode": conf.cc_mode(), "outages": outages}

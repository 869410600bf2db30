"""Portal-wide handling of failures a page cannot recover from by itself."""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from integrations.crypto import DecryptionError

logger = logging.getLogger(__name__)


class ConfigurationErrorMiddleware:
    """A stored secret that no key in FIELD_ENCRYPTION_KEYS opens is an operator's problem, not
    a bug: every page touching it answers 500 with the fix instead of a traceback."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, DecryptionError):
            return None
        logger.error("%s %s: %s", request.method, request.path, exception)
        return render(
            request,
            "integrations/problem.html",
            {"title": "ccportal cannot read its stored secrets", "message": str(exception)},
            status=500,
        )

"""``/metrics``: the portal's figures for Prometheus, behind a bearer token.

Off (404) until ``CC_METRICS_TOKEN`` is set; then a scrape must send
``Authorization: Bearer <token>``. Prometheus: ``authorization: {credentials: <token>}``.
"""

from __future__ import annotations

import hmac
from http import HTTPStatus

from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from integrations import conf
from integrations.metrics import PortalCollector


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    token = conf.metrics_token()
    if not token:
        raise Http404("Metrics are off: set CC_METRICS_TOKEN to turn them on.")
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        response = HttpResponse(
            "A bearer token is required (Authorization: Bearer <CC_METRICS_TOKEN>).\n",
            status=HTTPStatus.UNAUTHORIZED,
            content_type="text/plain",
        )
        response["WWW-Authenticate"] = 'Bearer realm="ccportal metrics"'
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PortalCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

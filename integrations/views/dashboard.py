"""The dashboard: one live panel per API key."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.utils import timezone
from django.views.decorators.http import require_GET

from integrations import selectors
from integrations.permissions import VIEW_PORTAL, portal_permission_required
from integrations.views.usage import key_panel_context


@portal_permission_required(VIEW_PORTAL)
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    """A live panel per API key (each re-fetches itself: ``views.usage.key_panel``)."""
    now = timezone.now()
    panels = [
        render_to_string(
            "integrations/_key_panel.html", key_panel_context(key, now=now), request=request
        )
        for key in selectors.api_key_list()
    ]
    return render(request, "integrations/dashboard.html", {"panels": panels})

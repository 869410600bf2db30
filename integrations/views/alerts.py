"""Alerts: the destinations, forms to add, remove and test them, and the recent deliveries.

Looking needs ``view_portal``; changing anything needs ``manage_keys`` (a webhook's secret
signs what the portal says about its keys and accounts).
"""

from __future__ import annotations

from http import HTTPStatus

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from integrations.models import AlertEventType, AlertKind, DeliveryState
from integrations.permissions import MANAGE_KEYS, VIEW_PORTAL, portal_permission_required
from integrations.services import alerts
from integrations.views.common import SERVICE_ERRORS

#: Deliveries the page shows.
LOG_ROWS = 50


class AlertDestinationForm(forms.Form):
    """What a person fills in to add a destination; the alert service checks the values."""

    kind = forms.ChoiceField(choices=AlertKind.choices, initial=AlertKind.WEBHOOK)
    target = forms.CharField(
        label="URL or e-mail address", max_length=alerts.TARGET_MAX, strip=True
    )
    secret = forms.CharField(
        label="Webhook secret",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=f"Webhooks only: at least {alerts.WEBHOOK_SECRET_MIN} characters; the "
        "receiver checks signatures with it. Never shown again.",
    )
    events = forms.MultipleChoiceField(
        choices=[(value, value) for value in AlertEventType.subscribable()],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every event.",
    )


def _page(request: HttpRequest, form: AlertDestinationForm, *, status: int = HTTPStatus.OK):
    return render(
        request,
        "integrations/alerts.html",
        {
            "destinations": list(alerts.alert_destination_list()),
            "deliveries": alerts.alert_delivery_log(limit=LOG_ROWS),
            "form": form,
            "delivered": DeliveryState.DELIVERED,
            "failed": DeliveryState.FAILED,
        },
        status=status,
    )


@portal_permission_required(VIEW_PORTAL)
@require_GET
def alert_list(request: HttpRequest) -> HttpResponse:
    return _page(request, AlertDestinationForm())


@portal_permission_required(MANAGE_KEYS)
@require_POST
def alert_add(request: HttpRequest) -> HttpResponse:
    form = AlertDestinationForm(request.POST)
    if not form.is_valid():
        return _page(request, form, status=HTTPStatus.BAD_REQUEST)
    data = form.cleaned_data
    try:
        if data["kind"] == AlertKind.WEBHOOK:
            destination = alerts.alert_webhook_add(
                url=data["target"], secret=data["secret"], events=data["events"]
            )
        else:
            destination = alerts.alert_email_add(address=data["target"], events=data["events"])
    except SERVICE_ERRORS as exc:
        form.add_error(None, str(exc))
        return _page(request, form, status=HTTPStatus.BAD_REQUEST)
    messages.success(request, f"Added {destination}.")
    return redirect("integrations:alert_list")


@portal_permission_required(MANAGE_KEYS)
@require_POST
def alert_remove(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        destination = alerts.alert_destination_remove(pk=pk)
    except SERVICE_ERRORS as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Removed {destination}.")
    return redirect("integrations:alert_list")


@portal_permission_required(MANAGE_KEYS)
@require_POST
def alert_test(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        destination = alerts.alert_destination_get(pk=pk)
        delivery = alerts.alert_destination_test(destination=destination)
    except SERVICE_ERRORS as exc:
        messages.error(request, str(exc))
        return redirect("integrations:alert_list")
    if delivery.state == DeliveryState.DELIVERED:
        messages.success(request, f"Test delivered to {destination}.")
    else:
        messages.error(request, f"Test to {destination} failed: {delivery.last_error}")
    return redirect("integrations:alert_list")

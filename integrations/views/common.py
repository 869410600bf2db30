"""What every page shares: how a service's refusal becomes an HTTP status and a page."""

from __future__ import annotations

from http import HTTPStatus

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from integrations.constant_contact.errors import CCError
from integrations.errors import PortalError, Unavailable
from integrations.models import ConnectedAccount
from integrations.services.quota import QuotaExhausted

#: The two error types a view catches from a service.
SERVICE_ERRORS = (PortalError, CCError)


def status_for(error: Exception) -> HTTPStatus:
    """The HTTP status a page answers with when a service raised ``error``."""
    if isinstance(error, Unavailable):
        return HTTPStatus.SERVICE_UNAVAILABLE
    if isinstance(error, QuotaExhausted):
        return HTTPStatus.TOO_MANY_REQUESTS
    if isinstance(error, CCError):
        return HTTPStatus.BAD_GATEWAY
    return HTTPStatus.BAD_REQUEST


def cc_failure_message(error: Exception) -> str:
    return f"Could not load data from Constant Contact: {error}"


def problem(
    request: HttpRequest,
    title: str,
    message: str,
    *,
    status: HTTPStatus,
    account: ConnectedAccount | None = None,
) -> HttpResponse:
    """A page that says what went wrong and links back to where the person came from."""
    context = {"title": title, "message": message}
    if account is not None:
        context |= {
            "back_url": reverse("integrations:account_detail", args=[account.pk]),
            "back_label": f"Back to {account}",
        }
    return render(request, "integrations/problem.html", context, status=status)

"""Accounts: the list, one account's page with its CC lists and budget, and the Connect flow."""

from __future__ import annotations

from http import HTTPStatus

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_ratelimit.decorators import ratelimit

from integrations import selectors
from integrations.forms import AccountBudgetForm
from integrations.models import ApiKey, ConnectedAccount
from integrations.permissions import OPERATE_PORTAL, VIEW_PORTAL, portal_permission_required
from integrations.services.budgets import account_budget_describe, account_budget_set
from integrations.services.lists import account_contact_lists_snapshot
from integrations.services.oauth import (
    AccountSwitchNeedsConfirmation,
    ConnectDenied,
    ConnectError,
    account_disconnect,
    connect_complete,
    connect_start,
)
from integrations.views.common import SERVICE_ERRORS, cc_failure_message, status_for


def _too_many(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "integrations/connect_error.html",
        {"message": "Too many connect attempts from your address. Wait a minute and try again."},
        status=HTTPStatus.TOO_MANY_REQUESTS,
    )


def _connect_failed(request: HttpRequest, error: Exception) -> HttpResponse:
    """Connect could not start (a key whose secret no encryption key opens, the store down)."""
    return render(
        request,
        "integrations/connect_error.html",
        {"message": str(error)},
        status=status_for(error),
    )


def _account(pk: int) -> ConnectedAccount:
    return get_object_or_404(ConnectedAccount.objects.select_related("api_key"), pk=pk)


@portal_permission_required(VIEW_PORTAL)
@require_GET
def account_list(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "integrations/account_list.html",
        {"keys": selectors.api_key_list(), "accounts": selectors.account_list()},
    )


@portal_permission_required(VIEW_PORTAL)
@require_GET
def account_detail(request: HttpRequest, pk: int) -> HttpResponse:
    account = _account(pk)
    return render(
        request,
        "integrations/account_detail.html",
        {
            "account": account,
            "budget": account_budget_describe(account),
            "budget_form": AccountBudgetForm(
                initial=AccountBudgetForm.initial_for(account), auto_id="budget-%s"
            ),
        },
    )


@portal_permission_required(OPERATE_PORTAL)
@require_POST
def account_budget(request: HttpRequest, pk: int) -> HttpResponse:
    """Set the account's weight and daily cap from its page's budget card, then show the page
    with what was stored or why nothing was."""
    account = _account(pk)
    form = AccountBudgetForm(request.POST)
    if not form.is_valid():
        for line in form.error_lines():
            messages.error(request, f"Budget not changed. {line}")
        return redirect("integrations:account_detail", pk=account.pk)
    try:
        account_budget_set(account=account, actor=request.user, **form.service_arguments())
    except SERVICE_ERRORS as exc:
        messages.error(request, f"Budget not changed: {exc}")
    else:
        messages.success(request, f"Budget of {account}: {account_budget_describe(account)}.")
    return redirect("integrations:account_detail", pk=account.pk)


def _lists_partial(request: HttpRequest, account: ConnectedAccount, *, fresh: bool) -> HttpResponse:
    """The lists card: CC's lists and member counts as of when CC gave them, or why not."""
    error, snapshot = "", None
    if account.is_active:
        try:
            snapshot = account_contact_lists_snapshot(account=account, fresh=fresh)
        except SERVICE_ERRORS as exc:
            error = cc_failure_message(exc)
    return render(
        request,
        "integrations/_account_lists.html",
        {
            "account": account,
            "lists": snapshot.lists if snapshot else [],
            "fetched_at": snapshot.fetched_at if snapshot else None,
            "error": error,
            "jobs": selectors.job_list(account=account)[:10],
        },
    )


@portal_permission_required(VIEW_PORTAL)
@require_GET
def account_lists(request: HttpRequest, pk: int) -> HttpResponse:
    """The account's lists (an htmx partial of the account page), from the minute's cache."""
    return _lists_partial(request, _account(pk), fresh=False)


@portal_permission_required(OPERATE_PORTAL)
@require_POST
def account_lists_refresh(request: HttpRequest, pk: int) -> HttpResponse:
    """Read the lists from CC again (spends one call of the key's budget) and show them: the
    card in place for htmx, else the account page, which shows the answer just read."""
    account = _account(pk)
    if request.htmx:
        return _lists_partial(request, account, fresh=True)
    try:
        account_contact_lists_snapshot(account=account, fresh=True)
    except SERVICE_ERRORS as exc:
        messages.error(request, cc_failure_message(exc))
    return redirect("integrations:account_detail", pk=account.pk)


@portal_permission_required(OPERATE_PORTAL)
@require_POST
@ratelimit(key="user_or_ip", rate="20/m", block=False)
def connect(request: HttpRequest, key_pk: int) -> HttpResponse:
    if getattr(request, "limited", False):
        return _too_many(request)
    api_key = get_object_or_404(ApiKey, pk=key_pk)
    try:
        url = connect_start(session=request.session, api_key=api_key)
    except SERVICE_ERRORS as exc:
        return _connect_failed(request, exc)
    return HttpResponseRedirect(url)


@portal_permission_required(OPERATE_PORTAL)
@require_POST
@ratelimit(key="user_or_ip", rate="20/m", block=False)
def reconnect(request: HttpRequest, pk: int) -> HttpResponse:
    if getattr(request, "limited", False):
        return _too_many(request)
    account = _account(pk)
    try:
        url = connect_start(
            session=request.session,
            api_key=account.api_key,
            reconnect=account,
            allow_account_switch=request.POST.get("allow_switch") == "yes",
        )
    except SERVICE_ERRORS as exc:
        return _connect_failed(request, exc)
    return HttpResponseRedirect(url)


@portal_permission_required(OPERATE_PORTAL, login_next="integrations:account_list")
@require_GET
@ratelimit(key="user_or_ip", rate="30/m", block=False)
def connect_callback(request: HttpRequest) -> HttpResponse:
    """CC redirects here with ``code`` and ``state`` (or ``error``)."""
    if getattr(request, "limited", False):
        return _too_many(request)
    try:
        result = connect_complete(session=request.session, params=request.GET.dict())
    except ConnectDenied as exc:
        messages.warning(request, str(exc))
        return redirect("integrations:account_list")
    except AccountSwitchNeedsConfirmation as exc:
        return render(
            request,
            "integrations/connect_switch.html",
            {"message": str(exc), "account": exc.account},
            status=HTTPStatus.CONFLICT,
        )
    except ConnectError as exc:
        return render(
            request,
            "integrations/connect_error.html",
            {"message": str(exc)},
            status=status_for(exc),
        )
    verb = "Connected" if result.created else "Reconnected"
    messages.success(request, f"{verb} {result.account}.")
    # A redirect, so the code and state leave the address bar and the browser history.
    return redirect("integrations:account_detail", pk=result.account.pk)


@portal_permission_required(OPERATE_PORTAL)
@require_POST
def disconnect(request: HttpRequest, pk: int) -> HttpResponse:
    account = get_object_or_404(ConnectedAccount, pk=pk)
    account_disconnect(account=account)
    messages.success(request, f"Disconnected {account}; its tokens were erased.")
    return redirect("integrations:account_detail", pk=account.pk)

"""Thin views: parse the request, call a service or selector, render."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_ratelimit.decorators import ratelimit

from integrations import selectors
from integrations.constant_contact.errors import CCError
from integrations.forms import SyncMembershipForm
from integrations.models import ApiKey, BulkJob, ConnectedAccount
from integrations.services import bulk
from integrations.services.oauth import (
    AccountSwitchNeedsConfirmation,
    ConnectDenied,
    ConnectError,
    account_disconnect,
    connect_complete,
    connect_start,
)
from integrations.services.quota import QuotaExhausted, QuotaStoreUnavailable
from integrations.services.tokens import AccountNotConnected, TokenRefreshFailed
from integrations.tasks import bulk_job_enqueue

SERVICE_ERRORS = (
    CCError,
    QuotaExhausted,
    QuotaStoreUnavailable,
    AccountNotConnected,
    TokenRefreshFailed,
)


@method_decorator(ratelimit(key="ip", rate="10/m", method="POST", block=False), name="dispatch")
class RateLimitedLoginView(LoginView):
    """Django's login, with a per-IP limit on attempts (a friendly message, not a 403)."""

    template_name = "registration/login.html"
    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if getattr(request, "limited", False):
            form = self.get_form()
            form.add_error(None, "Too many login attempts. Wait a minute and try again.")
            return self.render_to_response(self.get_context_data(form=form), status=429)
        return super().post(request, *args, **kwargs)


def _too_many(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "integrations/connect_error.html",
        {"message": "Too many connect attempts from your address. Wait a minute and try again."},
        status=429,
    )


@staff_member_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    keys = selectors.api_key_list()
    rows = [{"key": key, "usage": selectors.usage_today(api_key=key)} for key in keys]
    return render(
        request,
        "integrations/dashboard.html",
        {"key_rows": rows, "accounts": selectors.account_list()},
    )


@staff_member_required
@require_GET
def account_list(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "integrations/account_list.html",
        {"keys": selectors.api_key_list(), "accounts": selectors.account_list()},
    )


@staff_member_required
@require_GET
def account_detail(request: HttpRequest, pk: int) -> HttpResponse:
    account = get_object_or_404(ConnectedAccount.objects.select_related("api_key"), pk=pk)
    return render(request, "integrations/account_detail.html", {"account": account})


@staff_member_required
@require_POST
@ratelimit(key="user_or_ip", rate="20/m", block=False)
def connect(request: HttpRequest, key_pk: int) -> HttpResponse:
    if getattr(request, "limited", False):
        return _too_many(request)
    api_key = get_object_or_404(ApiKey, pk=key_pk)
    return HttpResponseRedirect(connect_start(session=request.session, api_key=api_key))


@staff_member_required
@require_POST
@ratelimit(key="user_or_ip", rate="20/m", block=False)
def reconnect(request: HttpRequest, pk: int) -> HttpResponse:
    if getattr(request, "limited", False):
        return _too_many(request)
    account = get_object_or_404(ConnectedAccount.objects.select_related("api_key"), pk=pk)
    url = connect_start(
        session=request.session,
        api_key=account.api_key,
        reconnect=account,
        allow_account_switch=request.POST.get("allow_switch") == "yes",
    )
    return HttpResponseRedirect(url)


@staff_member_required
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
            status=exc.status,
        )
    except ConnectError as exc:
        return render(
            request, "integrations/connect_error.html", {"message": str(exc)}, status=exc.status
        )
    verb = "Connected" if result.created else "Reconnected"
    messages.success(request, f"{verb} {result.account}.")
    # A redirect, so the code and state leave the address bar and the browser history.
    return redirect("integrations:account_detail", pk=result.account.pk)


@staff_member_required
@require_POST
def disconnect(request: HttpRequest, pk: int) -> HttpResponse:
    account = get_object_or_404(ConnectedAccount, pk=pk)
    account_disconnect(account=account)
    messages.success(request, f"Disconnected {account}; its tokens were erased.")
    return redirect("integrations:account_detail", pk=account.pk)


# --- lists and sync jobs -------------------------------------------------------------------------
def _cc_failure_message(exc: Exception) -> str:
    return f"Could not load data from Constant Contact: {exc}"


def _problem(
    request: HttpRequest, title: str, message: str, *, account: ConnectedAccount, status: int
) -> HttpResponse:
    return render(
        request,
        "integrations/problem.html",
        {
            "title": title,
            "message": message,
            "back_url": reverse("integrations:account_detail", args=[account.pk]),
            "back_label": f"Back to {account}",
        },
        status=status,
    )


@staff_member_required
@require_GET
def account_lists(request: HttpRequest, pk: int) -> HttpResponse:
    """The account's lists (an htmx partial of the account page)."""
    account = get_object_or_404(ConnectedAccount.objects.select_related("api_key"), pk=pk)
    error, lists = "", []
    if account.is_active:
        try:
            lists = selectors.account_contact_lists(
                account=account, fresh=request.GET.get("fresh") == "1"
            )
        except SERVICE_ERRORS as exc:
            error = _cc_failure_message(exc)
    return render(
        request,
        "integrations/_account_lists.html",
        {
            "account": account,
            "lists": lists,
            "error": error,
            "jobs": selectors.job_list(account=account)[:10],
        },
    )


@staff_member_required
@require_http_methods(["GET", "POST"])
def sync_start(request: HttpRequest, pk: int, list_id: str) -> HttpResponse:
    account = get_object_or_404(ConnectedAccount.objects.select_related("api_key"), pk=pk)
    try:
        lists = selectors.account_contact_lists(account=account)
    except SERVICE_ERRORS as exc:
        return _problem(
            request,
            "Could not load the account's lists",
            _cc_failure_message(exc),
            account=account,
            status=502,
        )
    target = next((item for item in lists if item.get("list_id") == list_id), None)
    if target is None:
        return _problem(
            request,
            "No such list",
            "That list does not exist in this Constant Contact account.",
            account=account,
            status=404,
        )
    form = SyncMembershipForm(
        request.POST or None, request.FILES or None, lists=lists, exclude_list=list_id
    )
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data.get("csv_file")
        try:
            job = bulk.bulk_job_create(
                account=account,
                list_id=list_id,
                list_name=target.get("name", ""),
                mode=form.cleaned_data["mode"],
                csv_chunks=upload.chunks() if upload else None,
                source_list_id=form.cleaned_data.get("source_list_id") or "",
                user=request.user,
            )
        except bulk.BulkInputError as exc:
            form.add_error(None, f"Nothing was sent to Constant Contact: {exc}")
        else:
            bulk_job_enqueue(job.pk)
            return redirect("integrations:job_detail", pk=job.pk)
    return render(
        request,
        "integrations/sync_start.html",
        {"account": account, "target": target, "form": form},
        status=400 if request.method == "POST" else 200,
    )


@staff_member_required
@require_GET
def job_list(request: HttpRequest) -> HttpResponse:
    return render(request, "integrations/job_list.html", {"jobs": selectors.job_list()[:200]})


def _job_context(job: BulkJob) -> dict:
    return {
        "job": job,
        "progress": bulk.bulk_job_progress(job),
        "plan": job.plan or {},
        "result": job.result or {},
    }


@staff_member_required
@require_GET
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(BulkJob.objects.select_related("account__api_key"), pk=pk)
    return render(request, "integrations/job_detail.html", _job_context(job))


@staff_member_required
@require_GET
def job_progress(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(BulkJob.objects.select_related("account__api_key"), pk=pk)
    return render(request, "integrations/_job_body.html", _job_context(job))


@staff_member_required
@require_POST
def job_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    job = get_object_or_404(BulkJob.objects.select_related("account__api_key"), pk=pk)
    try:
        if action == "run":
            job = bulk.bulk_job_approve(job=job)
            bulk_job_enqueue(job.pk)
            messages.success(request, "Running: progress updates live below.")
        elif action == "schedule":
            from integrations.services.quota import next_utc_midnight

            run_after = next_utc_midnight()
            job = bulk.bulk_job_approve(job=job, run_after=run_after)
            bulk_job_enqueue(job.pk, run_after=run_after)
            messages.success(
                request,
                f"Scheduled for {run_after:%Y-%m-%d %H:%M} UTC, when the daily budget resets.",
            )
        elif action == "cancel":
            bulk.bulk_job_cancel(job=job)
            messages.warning(request, "Cancel requested: the job stops at its next step.")
        elif action == "resume":
            bulk.bulk_job_resume(job=job)
            bulk_job_enqueue(job.pk)
            messages.success(request, "Resumed.")
        elif action == "retry":
            new_job = bulk.bulk_job_retry_failed(job=job, user=request.user)
            bulk_job_enqueue(new_job.pk)
            messages.success(request, "A new job retries the rows Constant Contact rejected.")
            return redirect("integrations:job_detail", pk=new_job.pk)
        else:
            return HttpResponse("Unknown action.", status=404)
    except bulk.BulkInputError as exc:
        messages.error(request, str(exc))
    except SERVICE_ERRORS as exc:
        messages.error(request, f"Nothing changed: {exc}")
    return redirect("integrations:job_detail", pk=job.pk)


@staff_member_required
@require_GET
def job_rejected_csv(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(BulkJob, pk=pk)
    response = HttpResponse(bulk.bulk_job_rejected_csv(job), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="sync-{job.pk}-rejected-rows.csv"'
    return response


@staff_member_required
@require_GET
def call_log(request: HttpRequest) -> HttpResponse:
    return render(request, "integrations/call_log.html", {"calls": selectors.api_call_list()})

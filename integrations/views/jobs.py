"""List syncs: start one from an account's list, follow it, act on it."""

from __future__ import annotations

from http import HTTPStatus

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from integrations import selectors
from integrations.constant_contact.limits import next_utc_midnight
from integrations.forms import SyncMembershipForm
from integrations.models import BulkJob, ConnectedAccount
from integrations.permissions import OPERATE_PORTAL, VIEW_PORTAL, portal_permission_required
from integrations.services.bulk_jobs import (
    BulkInputError,
    bulk_job_approve,
    bulk_job_cancel,
    bulk_job_create,
    bulk_job_plan_lines,
    bulk_job_progress,
    bulk_job_rejected_csv,
    bulk_job_resume,
    bulk_job_retry_failed,
    sync_budget_note,
    sync_sample_csv,
)
from integrations.services.lists import account_contact_lists
from integrations.tasks import bulk_job_enqueue
from integrations.views.common import SERVICE_ERRORS, cc_failure_message, problem


def _job(pk: int) -> BulkJob:
    jobs = BulkJob.objects.select_related("account__api_key").with_calls_made()
    return get_object_or_404(jobs, pk=pk)


@portal_permission_required(OPERATE_PORTAL)
@require_http_methods(["GET", "POST"])
def sync_start(request: HttpRequest, pk: int, list_id: str) -> HttpResponse:
    account = get_object_or_404(ConnectedAccount.objects.select_related("api_key"), pk=pk)
    try:
        lists = account_contact_lists(account=account)
    except SERVICE_ERRORS as exc:
        return problem(
            request,
            "Could not load the account's lists",
            cc_failure_message(exc),
            account=account,
            status=HTTPStatus.BAD_GATEWAY,
        )
    target = next((item for item in lists if item.get("list_id") == list_id), None)
    if target is None:
        return problem(
            request,
            "No such list",
            "That list does not exist in this Constant Contact account.",
            account=account,
            status=HTTPStatus.NOT_FOUND,
        )
    form = SyncMembershipForm(
        request.POST or None, request.FILES or None, lists=lists, exclude_list=list_id
    )
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data.get("csv_file")
        try:
            job = bulk_job_create(
                account=account,
                list_id=list_id,
                list_name=target.get("name", ""),
                mode=form.cleaned_data["mode"],
                csv_chunks=upload.chunks() if upload else None,
                source_list_id=form.cleaned_data.get("source_list_id") or "",
                user=request.user,
            )
        except BulkInputError as exc:
            form.add_error(None, f"Nothing was sent to Constant Contact: {exc}")
        else:
            bulk_job_enqueue(job.pk)
            return redirect("integrations:job_detail", pk=job.pk)
    return render(
        request,
        "integrations/sync_start.html",
        {"account": account, "target": target, "form": form},
        status=HTTPStatus.BAD_REQUEST if request.method == "POST" else HTTPStatus.OK,
    )


@portal_permission_required(OPERATE_PORTAL)
@require_GET
def sync_sample_csv_download(request: HttpRequest) -> HttpResponse:
    """A small CSV the sync form accepts, to start a file from."""
    response = HttpResponse(sync_sample_csv(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="ccportal-sync-sample.csv"'
    return response


@portal_permission_required(VIEW_PORTAL)
@require_GET
def job_list(request: HttpRequest) -> HttpResponse:
    jobs = selectors.job_list().with_calls_made()[:200]
    return render(request, "integrations/job_list.html", {"jobs": jobs})


def _job_context(job: BulkJob) -> dict:
    return {
        "job": job,
        "progress": bulk_job_progress(job),
        "plan": job.plan or {},
        "plan_lines": bulk_job_plan_lines(job),
        "budget_note": sync_budget_note(job) if job.has_plan else "",
        "result": job.result or {},
    }


@portal_permission_required(VIEW_PORTAL)
@require_GET
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return render(request, "integrations/job_detail.html", _job_context(_job(pk)))


@portal_permission_required(VIEW_PORTAL)
@require_GET
def job_progress(request: HttpRequest, pk: int) -> HttpResponse:
    return render(request, "integrations/_job_body.html", _job_context(_job(pk)))


def _approval(request: HttpRequest) -> dict:
    """What the plan form said: the strategy chosen, and whether the removals are confirmed."""
    return {
        "strategy": request.POST.get("strategy") or None,
        "allow_removals": request.POST.get("confirm_removals") == "yes",
    }


def _run(request: HttpRequest, job: BulkJob) -> BulkJob:
    job = bulk_job_approve(job=job, **_approval(request))
    bulk_job_enqueue(job.pk)
    messages.success(request, "Running: progress updates live below.")
    return job


def _schedule(request: HttpRequest, job: BulkJob) -> BulkJob:
    run_after = next_utc_midnight()
    job = bulk_job_approve(job=job, run_after=run_after, **_approval(request))
    bulk_job_enqueue(job.pk, run_after=run_after)
    messages.success(
        request, f"Scheduled for {run_after:%Y-%m-%d %H:%M} UTC, when the daily budget resets."
    )
    return job


def _cancel(request: HttpRequest, job: BulkJob) -> BulkJob:
    job = bulk_job_cancel(job=job)
    messages.warning(request, "Cancel requested: the job stops at its next step.")
    return job


def _resume(request: HttpRequest, job: BulkJob) -> BulkJob:
    job = bulk_job_resume(job=job)
    bulk_job_enqueue(job.pk)
    messages.success(request, "Resumed.")
    return job


def _retry(request: HttpRequest, job: BulkJob) -> BulkJob:
    new_job = bulk_job_retry_failed(job=job, user=request.user)
    bulk_job_enqueue(new_job.pk)
    messages.success(request, "A new job retries the rows Constant Contact rejected.")
    return new_job


JOB_ACTIONS = {
    "run": _run,
    "schedule": _schedule,
    "cancel": _cancel,
    "resume": _resume,
    "retry": _retry,
}


@portal_permission_required(OPERATE_PORTAL)
@require_POST
def job_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    act = JOB_ACTIONS.get(action)
    if act is None:
        raise Http404("Unknown action.")
    job = _job(pk)
    try:
        job = act(request, job)
    except SERVICE_ERRORS as exc:
        messages.error(request, f"Nothing changed: {exc}")
    return redirect("integrations:job_detail", pk=job.pk)


@portal_permission_required(VIEW_PORTAL)
@require_GET
def job_rejected_csv(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(BulkJob, pk=pk)
    response = HttpResponse(bulk_job_rejected_csv(job), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="sync-{job.pk}-rejected-rows.csv"'
    return response

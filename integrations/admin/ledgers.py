"""What the portal writes as it works (calls, usage, the limiter, workers) and the bulk jobs."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from integrations.admin.base import LedgerAdmin, PortalAdmin
from integrations.errors import PortalError
from integrations.models import ApiCall, BulkJob, DailyUsage, KeyLimiterState, WorkerHeartbeat
from integrations.services.bulk_jobs import bulk_job_cancel


@admin.register(ApiCall)
class ApiCallAdmin(LedgerAdmin):
    list_display = [
        "created_at",
        "api_key",
        "account",
        "kind",
        "method",
        "path_template",
        "status_code",
        "error_key",
        "latency_ms",
        "attempt",
        "lane",
        "proxy_token",
    ]
    list_filter = ["kind", "lane", "status_code", "error_key", "api_key", "proxy_token"]
    search_fields = ["path_template", "error_key"]
    date_hierarchy = "created_at"
    list_select_related = ["api_key", "account", "proxy_token"]


@admin.register(DailyUsage)
class DailyUsageAdmin(LedgerAdmin):
    list_display = [
        "date",
        "api_key",
        "calls",
        "errors",
        "throttled",
        "quota_exceeded",
        "token_calls",
    ]
    list_filter = ["api_key"]
    date_hierarchy = "date"


@admin.register(KeyLimiterState)
class KeyLimiterStateAdmin(LedgerAdmin):
    list_display = ["api_key", "day", "day_count", "margin", "paused_until", "updated_at"]


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(LedgerAdmin):
    list_display = ["worker", "seen_at", "started_at", "beats"]
    search_fields = ["worker"]


@admin.register(BulkJob)
class BulkJobAdmin(PortalAdmin):
    actions = ["cancel"]
    list_display = [
        "__str__",
        "account",
        "mode",
        "state",
        "phase",
        "calls_used",
        "calls_planned",
        "updated_at",
    ]
    list_filter = ["state", "mode"]
    search_fields = ["list_id", "list_name"]
    readonly_fields = [
        "plan",
        "progress",
        "checkpoint",
        "result",
        "calls_used",
        "calls_planned",
        "lease_owner",
        "lease_expires_at",
        "heartbeat_at",
        "started_at",
        "finished_at",
    ]

    @admin.action(description="Cancel the selected jobs")
    def cancel(self, request: HttpRequest, queryset: QuerySet[BulkJob]) -> None:
        cancelled = 0
        for job in queryset:
            try:
                bulk_job_cancel(job=job)
            except PortalError as exc:
                self.message_user(request, f"{job}: nothing changed: {exc}", messages.ERROR)
            else:
                cancelled += 1
        self.message_user(request, f"Cancel requested for {cancelled} job(s).")

    cancel.allowed_permissions = ("operate",)  # type: ignore[attr-defined]

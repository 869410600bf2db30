"""Django admin for every model. Secrets are never rendered: only whether one is stored, its
expiry and a short fingerprint. Secrets can be *set* (write-only inputs), never read back."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.utils import timezone

from integrations.models import (
    ApiCall,
    ApiKey,
    BulkJob,
    ConnectedAccount,
    DailyUsage,
    KeyLimiterState,
)


def _secret_state(fingerprint: str) -> str:
    return f"stored · {fingerprint}" if fingerprint else "—"


class ApiKeyForm(forms.ModelForm):
    redirect_uri = forms.URLField(
        max_length=500, assume_scheme="https", help_text="Exactly as registered with CC."
    )
    new_client_secret = forms.CharField(
        label="Client secret",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False),
        help_text="Write-only. Leave empty to keep the stored secret (or for a PKCE app).",
    )
    clear_client_secret = forms.BooleanField(label="Remove stored secret", required=False)

    class Meta:
        model = ApiKey
        fields = [
            "name",
            "client_id",
            "redirect_uri",
            "tier",
            "custom_per_second",
            "custom_per_day",
            "use_pkce",
        ]

    def save(self, commit: bool = True) -> ApiKey:
        key = super().save(commit=False)
        if self.cleaned_data.get("clear_client_secret"):
            key.client_secret = ""
        elif self.cleaned_data.get("new_client_secret"):
            key.client_secret = self.cleaned_data["new_client_secret"]
        if commit:
            key.save()
        return key


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = ["name", "client_id", "tier", "limits", "use_pkce", "secret", "updated_at"]
    list_filter = ["tier", "use_pkce"]
    search_fields = ["name", "client_id"]
    readonly_fields = ["secret", "created_at", "updated_at"]

    @admin.display(description="limits")
    def limits(self, obj: ApiKey) -> str:
        return f"{obj.per_second}/s · {obj.per_day:,}/day"

    @admin.display(description="client secret")
    def secret(self, obj: ApiKey) -> str:
        return _secret_state(obj.client_secret_fingerprint)


@admin.register(ConnectedAccount)
class ConnectedAccountAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "api_key",
        "status",
        "access_expires_at",
        "refresh_mode",
        "refresh_idle_days",
        "token_version",
    ]
    list_filter = ["status", "refresh_mode", "api_key"]
    search_fields = ["label", "cc_user_id", "platform_user_id"]
    exclude = ["access_token", "refresh_token"]
    readonly_fields = [
        "access_token_state",
        "refresh_token_state",
        "access_expires_at",
        "token_version",
        "refresh_token_issued_at",
        "refresh_token_last_used_at",
        "refresh_lease_owner",
        "refresh_lease_expires_at",
        "connected_at",
        "created_at",
        "updated_at",
    ]

    @admin.display(description="access token")
    def access_token_state(self, obj: ConnectedAccount) -> str:
        return _secret_state(obj.access_token_fingerprint)

    @admin.display(description="refresh token")
    def refresh_token_state(self, obj: ConnectedAccount) -> str:
        return _secret_state(obj.refresh_token_fingerprint)

    @admin.display(description="refresh idle (days)")
    def refresh_idle_days(self, obj: ConnectedAccount) -> int | None:
        return obj.refresh_token_idle_days(at=timezone.now())


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ApiCall)
class ApiCallAdmin(ReadOnlyAdmin):
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
    ]
    list_filter = ["kind", "lane", "status_code", "error_key", "api_key"]
    search_fields = ["path_template", "error_key"]
    date_hierarchy = "created_at"
    list_select_related = ["api_key", "account"]

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(DailyUsage)
class DailyUsageAdmin(ReadOnlyAdmin):
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
class KeyLimiterStateAdmin(ReadOnlyAdmin):
    list_display = ["api_key", "day", "day_count", "margin", "paused_until", "updated_at"]


@admin.register(BulkJob)
class BulkJobAdmin(admin.ModelAdmin):
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

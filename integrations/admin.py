"""Django admin for every model. Secrets are never rendered: only whether one is stored, its
expiry and a short fingerprint. Secrets can be *set* (write-only inputs), never read back.

Who may do what follows the portal's permissions (``integrations.permissions``), not Django's
per-model ones: ``view_portal`` to look at anything, ``operate_portal`` to change accounts and
jobs and to run the actions that disconnect or cancel, ``manage_keys`` to add, change or delete
API keys. The call log and the usage ledgers are written by the portal alone: nobody changes
them here, and only a superuser deletes their rows. A staff user with none of the three sees
an empty admin.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from integrations.crypto import is_unreadable
from integrations.errors import PortalError
from integrations.models import (
    AlertDelivery,
    AlertDestination,
    AlertEvent,
    AlertEventType,
    AlertKind,
    ApiCall,
    ApiKey,
    BulkJob,
    ConnectedAccount,
    DailyUsage,
    KeyLimiterState,
    ProxyToken,
    WorkerHeartbeat,
)
from integrations.permissions import MANAGE_KEYS, OPERATE_PORTAL, VIEW_PORTAL, user_may
from integrations.services import alerts, budgets, keys, proxy_tokens
from integrations.services.bulk_jobs import bulk_job_cancel
from integrations.services.oauth import account_disconnect

SECRET_UNREADABLE = "unreadable secret: re-enter it"
TOKENS_UNREADABLE = "tokens unreadable: reconnect"


def _secret_state(secret: str, fingerprint: str, *, unreadable: str = SECRET_UNREADABLE) -> str:
    if is_unreadable(secret):
        return unreadable
    return f"stored · {fingerprint}" if secret else "—"


class PortalAdmin(admin.ModelAdmin):
    """A model's admin behind the portal's permissions: one codename per kind of access
    (``None``: nobody but a superuser)."""

    view_permission: str | None = VIEW_PORTAL
    add_permission: str | None = OPERATE_PORTAL
    change_permission: str | None = OPERATE_PORTAL
    delete_permission: str | None = OPERATE_PORTAL

    @staticmethod
    def _may(request: HttpRequest, codename: str | None) -> bool:
        if codename is None:
            return bool(request.user.is_active and request.user.is_superuser)
        return user_may(request.user, codename)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._may(request, VIEW_PORTAL)

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return self._may(request, self.view_permission) or self.has_change_permission(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self._may(request, self.add_permission)

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return self._may(request, self.change_permission)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return self._may(request, self.delete_permission)

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """For the actions that act on Constant Contact accounts and jobs."""
        return self._may(request, OPERATE_PORTAL)


PKCE_CHOICES = [
    ("auto", "Automatic: on for an app without a secret (a CC PKCE app)"),
    ("on", "On"),
    ("off", "Off"),
]


class ApiKeyForm(forms.ModelForm):
    """The admin's face of the key service: it checks and saves through
    ``integrations.services.keys``, exactly as ``manage.py cc_key`` does."""

    redirect_uri = forms.CharField(
        max_length=500, help_text="Exactly as registered with Constant Contact."
    )
    pkce = forms.ChoiceField(label="PKCE", choices=PKCE_CHOICES, initial="auto", required=False)
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
        fields = ["name", "client_id", "tier", "custom_per_second", "custom_per_day"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["redirect_uri"] = self.instance.redirect_uri
            self.initial["pkce"] = "on" if self.instance.use_pkce else "off"

    def _get_validation_exclusions(self) -> set[str]:
        # The redirect URI is the key service's to check (it accepts intranet hosts that the
        # model's URLField would not), and the service sets it.
        return {*super()._get_validation_exclusions(), "redirect_uri"}

    def clean(self) -> dict:
        cleaned = super().clean()
        try:
            keys.api_key_validate(
                name=cleaned.get("name") or "",
                client_id=cleaned.get("client_id") or "",
                redirect_uri=cleaned.get("redirect_uri") or "",
                tier=cleaned.get("tier") or "",
                per_second=cleaned.get("custom_per_second"),
                per_day=cleaned.get("custom_per_day"),
                api_key=self.instance if self.instance.pk else None,
            )
        except keys.ApiKeyInvalid as error:
            field = error.field if error.field in self.fields else None
            self.add_error(field, str(error))
        return cleaned

    def service_arguments(self) -> dict:
        """What the key service is called with, from the cleaned form."""
        data = self.cleaned_data
        secret = data.get("new_client_secret") or None
        if data.get("clear_client_secret"):
            secret = ""
        # Left out of the form: the key's setting stays (a new key's follows its secret).
        pkce = data.get("pkce") or (
            ("on" if self.instance.use_pkce else "off") if self.instance.pk else "auto"
        )
        return {
            "name": data["name"],
            "client_id": data["client_id"],
            "redirect_uri": data["redirect_uri"],
            "tier": data["tier"],
            "per_second": data.get("custom_per_second"),
            "per_day": data.get("custom_per_day"),
            "use_pkce": {"auto": None, "on": True, "off": False}[pkce],
            "client_secret": secret,
        }


@admin.register(ApiKey)
class ApiKeyAdmin(PortalAdmin):
    add_permission = MANAGE_KEYS
    change_permission = MANAGE_KEYS
    delete_permission = MANAGE_KEYS
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
        return _secret_state(obj.client_secret, obj.client_secret_fingerprint)

    def save_model(self, request, obj: ApiKey, form: ApiKeyForm, change: bool) -> None:
        arguments = form.service_arguments()
        if change:
            saved = keys.api_key_update(api_key=obj, **arguments)
        else:
            arguments["client_secret"] = arguments["client_secret"] or ""
            saved = keys.api_key_create(**arguments)
        obj.pk = saved.pk
        obj.refresh_from_db()


#: The account's part of its key, kept by ``integrations.services.budgets``.
BUDGET_FIELDS = ["share_weight", "daily_cap", "daily_share"]
#: Each budget field and the budget service's argument for it.
BUDGET_ARGUMENTS = {"share_weight": "weight", "daily_cap": "per_day", "daily_share": "share"}


class ConnectedAccountForm(forms.ModelForm):
    """An account's change form, whose weight and caps are checked by the budget service, as
    ``manage.py cc_accounts set-budget`` and the account page check them. The admin supplies
    the model and its fields (every one but the tokens)."""

    def clean(self) -> dict:
        cleaned = super().clean()
        try:
            budgets.account_budget_validate(**self.budget_arguments())
        except budgets.BudgetInvalid as error:
            self.add_error(error.field if error.field in self.fields else None, str(error))
        return cleaned

    def budget_arguments(self, *, changed_only: bool = False) -> dict:
        """The budget service's arguments from the budget fields that passed their own
        checks (``changed_only``: those the person changed)."""
        data = getattr(self, "cleaned_data", {})
        return {
            argument: data[field]
            for field, argument in BUDGET_ARGUMENTS.items()
            if field in data and (not changed_only or field in self.changed_data)
        }


@admin.register(ConnectedAccount)
class ConnectedAccountAdmin(PortalAdmin):
    actions = ["disconnect"]
    form = ConnectedAccountForm
    list_display = [
        "__str__",
        "api_key",
        "status",
        "tokens",
        "access_expires_at",
        "refresh_mode",
        "refresh_idle_days",
        "token_version",
        "share_weight",
        "cap",
    ]
    list_select_related = ["api_key"]
    list_filter = ["status", "refresh_mode", "api_key"]
    search_fields = ["organization_name", "login_email", "label", "cc_user_id", "platform_user_id"]
    exclude = ["access_token", "refresh_token"]
    readonly_fields = [
        # Read from CC's account summary at connect and reconnect.
        "organization_name",
        "login_email",
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

    def get_fieldsets(self, request: HttpRequest, obj=None) -> list:
        fields = [f for f in self.get_fields(request, obj) if f not in BUDGET_FIELDS]
        return [
            (None, {"fields": fields}),
            (
                "Fair share and budget",
                {
                    "fields": BUDGET_FIELDS,
                    "description": "Background calls share the key between its accounts by "
                    "weight; a cap stops the account's calls for the rest of the UTC day. "
                    "With both caps set, the lower applies. Changes take effect within seconds.",
                },
            ),
        ]

    def save_model(
        self, request: HttpRequest, obj: ConnectedAccount, form: ConnectedAccountForm, change: bool
    ) -> None:
        budget = form.budget_arguments(changed_only=True) if change else {}
        if budget:
            # The budget service writes (and logs) the budget; the rest is saved as usual.
            stored = ConnectedAccount.objects.only(*BUDGET_FIELDS).get(pk=obj.pk)
            for field in BUDGET_FIELDS:
                setattr(obj, field, getattr(stored, field))
        super().save_model(request, obj, form, change)
        if budget:
            budgets.account_budget_set(account=obj, actor=request.user, **budget)

    @admin.display(description="daily cap")
    def cap(self, obj: ConnectedAccount) -> str:
        cap = obj.daily_cap_for(obj.api_key.per_day)
        return "—" if cap is None else f"{cap:,} calls"

    @admin.display(description="tokens")
    def tokens(self, obj: ConnectedAccount) -> str:
        if obj.tokens_unreadable:
            return TOKENS_UNREADABLE
        return "stored" if obj.access_token or obj.refresh_token else "—"

    @admin.display(description="access token")
    def access_token_state(self, obj: ConnectedAccount) -> str:
        return _secret_state(
            obj.access_token, obj.access_token_fingerprint, unreadable=TOKENS_UNREADABLE
        )

    @admin.display(description="refresh token")
    def refresh_token_state(self, obj: ConnectedAccount) -> str:
        return _secret_state(
            obj.refresh_token, obj.refresh_token_fingerprint, unreadable=TOKENS_UNREADABLE
        )

    @admin.action(description="Disconnect the selected accounts (erase their tokens)")
    def disconnect(self, request: HttpRequest, queryset: QuerySet[ConnectedAccount]) -> None:
        accounts = list(queryset)
        for account in accounts:
            account_disconnect(account=account)
        self.message_user(request, f"Disconnected {len(accounts)} account(s); tokens erased.")

    disconnect.allowed_permissions = ("operate",)  # type: ignore[attr-defined]

    @admin.display(description="refresh idle (days)")
    def refresh_idle_days(self, obj: ConnectedAccount) -> int | None:
        return obj.refresh_token_idle_days(at=timezone.now())


class LedgerAdmin(PortalAdmin):
    """What the portal writes as it works (calls, usage, the limiter's state, the workers'
    heartbeats): read-only here, and only a superuser deletes a row."""

    delete_permission = None

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


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


class AlertDestinationForm(forms.ModelForm):
    """Checked by the alert service, as ``manage.py cc_alerts`` and the alerts page are. The
    secret is write-only: empty keeps the stored one."""

    events = forms.MultipleChoiceField(
        choices=[(value, value) for value in AlertEventType.subscribable()],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every event.",
    )
    new_secret = forms.CharField(
        label="Webhook secret",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False),
        help_text="Write-only. Leave empty to keep the stored secret.",
    )

    class Meta:
        model = AlertDestination
        fields = ["kind", "target", "events", "enabled"]

    def clean(self) -> dict:
        cleaned = super().clean()
        kind, target = cleaned.get("kind"), cleaned.get("target") or ""
        secret = cleaned.get("new_secret") or ""
        try:
            cleaned["events"] = alerts.alert_events_parse(cleaned.get("events") or [])
            if kind == AlertKind.WEBHOOK:
                cleaned["target"] = alerts.alert_webhook_url_check(target)
                if secret or not self.instance.secret:
                    cleaned["new_secret"] = alerts.alert_webhook_secret_check(secret)
            elif kind == AlertKind.EMAIL:
                cleaned["target"] = alerts.alert_email_check(target)
        except alerts.AlertInvalid as error:
            self.add_error(None, str(error))
        return cleaned

    def save(self, commit: bool = True) -> AlertDestination:
        destination = super().save(commit=False)
        destination.events = self.cleaned_data["events"]
        if destination.kind != AlertKind.WEBHOOK:
            destination.secret = ""
        elif self.cleaned_data.get("new_secret"):
            destination.secret = self.cleaned_data["new_secret"]
        if commit:
            destination.save()
        return destination


@admin.register(AlertDestination)
class AlertDestinationAdmin(PortalAdmin):
    add_permission = MANAGE_KEYS
    change_permission = MANAGE_KEYS
    delete_permission = MANAGE_KEYS
    form = AlertDestinationForm
    list_display = ["__str__", "kind", "events_display", "enabled", "secret_state", "created_at"]
    list_filter = ["kind", "enabled"]
    readonly_fields = ["secret_state", "created_at"]

    @admin.display(description="secret")
    def secret_state(self, obj: AlertDestination) -> str:
        return _secret_state(obj.secret, obj.secret_fingerprint)


@admin.register(AlertEvent)
class AlertEventAdmin(LedgerAdmin):
    list_display = ["created_at", "event_type", "dedupe_key", "uid"]
    list_filter = ["event_type"]
    search_fields = ["dedupe_key"]
    date_hierarchy = "created_at"


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(LedgerAdmin):
    list_display = [
        "created_at",
        "event",
        "destination",
        "state",
        "attempts",
        "last_status_code",
        "last_error",
        "next_attempt_at",
        "delivered_at",
    ]
    list_filter = ["state", "destination"]
    date_hierarchy = "created_at"
    list_select_related = ["event", "destination"]


class ProxyTokenForm(forms.ModelForm):
    """A new portal token: made by the token service, which shows the token once."""

    expires_days = forms.IntegerField(
        required=False, min_value=1, help_text="Empty: the token does not expire."
    )

    class Meta:
        model = ProxyToken
        fields = ["name", "accounts", "lane"]

    def validate_unique(self) -> None:
        """The token service checks the name (and has made the token by now)."""

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        try:
            self.made = proxy_tokens.proxy_token_create(
                name=cleaned.get("name", ""),
                accounts=cleaned.get("accounts") or [],
                lane=cleaned.get("lane", ""),
                expires_days=cleaned.get("expires_days"),
            )
        except proxy_tokens.ProxyTokenInvalid as exc:
            field = exc.field if exc.field in self.fields else None
            self.add_error(field, str(exc))
        return cleaned


@admin.register(ProxyToken)
class ProxyTokenAdmin(PortalAdmin):
    """Portal tokens: the digest is never shown; the token itself only once, when made."""

    add_permission = MANAGE_KEYS
    change_permission = MANAGE_KEYS
    delete_permission = MANAGE_KEYS
    actions = ["revoke"]
    list_display = ["name", "shown", "status", "lane", "created_at", "last_used_at", "expires_at"]
    readonly_fields = [
        "name",
        "hint",
        "lane",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    ]
    filter_horizontal = ["accounts"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ProxyTokenForm
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["name", "accounts", "lane", "expires_days"]
        return ["name", "hint", "accounts", *self.readonly_fields[2:]]

    def save_model(self, request, obj: ProxyToken, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        made, secret = form.made
        obj.pk = made.pk
        # Shown on the answer page itself, never through messages (a cookie or the session).
        request.proxy_token_made = (made, secret)

    def response_add(self, request, obj, post_url_continue=None):
        made, secret = request.proxy_token_made
        response = TemplateResponse(
            request,
            "admin/integrations/proxytoken/made.html",
            {
                **self.admin_site.each_context(request),
                "token": made,
                "secret": secret,
                "opts": self.model._meta,
                "title": f"Portal token {made.name}",
            },
        )
        response["Cache-Control"] = "no-store"
        return response

    def save_related(self, request, form, formsets, change: bool) -> None:
        if change:
            super().save_related(request, form, formsets, change)

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ProxyToken]) -> None:
        for token in queryset:
            proxy_tokens.proxy_token_revoke(name=token.name)
        self.message_user(request, f"Revoked {queryset.count()} token(s).")

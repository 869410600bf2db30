"""API keys and connected accounts: changed only through the key and OAuth services."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from integrations.admin.base import (
    TOKENS_UNREADABLE,
    KeyManagersAdmin,
    PortalAdmin,
    secret_state,
    write_only_secret,
)
from integrations.models import ApiKey, ConnectedAccount
from integrations.services import budgets, keys
from integrations.services.oauth import account_disconnect

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
    new_client_secret = write_only_secret(
        "Client secret", "Write-only. Leave empty to keep the stored secret (or for a PKCE app)."
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
class ApiKeyAdmin(KeyManagersAdmin):
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
        return secret_state(obj.client_secret, obj.client_secret_fingerprint)

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
        return secret_state(
            obj.access_token, obj.access_token_fingerprint, unreadable=TOKENS_UNREADABLE
        )

    @admin.display(description="refresh token")
    def refresh_token_state(self, obj: ConnectedAccount) -> str:
        return secret_state(
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

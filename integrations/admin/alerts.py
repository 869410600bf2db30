"""Alert destinations, the events raised and their deliveries."""

from __future__ import annotations

from django import forms
from django.contrib import admin

from integrations.admin.base import (
    KeyManagersAdmin,
    LedgerAdmin,
    secret_state,
    write_only_secret,
)
from integrations.models import (
    AlertDelivery,
    AlertDestination,
    AlertEvent,
    AlertEventType,
    AlertKind,
)
from integrations.services import alerts


class AlertDestinationForm(forms.ModelForm):
    """Checked by the alert service, as ``manage.py cc_alerts`` and the alerts page are. The
    secret is write-only: empty keeps the stored one."""

    events = forms.MultipleChoiceField(
        choices=[(value, value) for value in AlertEventType.subscribable()],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every event.",
    )
    new_secret = write_only_secret(
        "Webhook secret", "Write-only. Leave empty to keep the stored secret."
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
class AlertDestinationAdmin(KeyManagersAdmin):
    form = AlertDestinationForm
    list_display = ["__str__", "kind", "events_display", "enabled", "secret_state", "created_at"]
    list_filter = ["kind", "enabled"]
    readonly_fields = ["secret_state", "created_at"]

    @admin.display(description="secret")
    def secret_state(self, obj: AlertDestination) -> str:
        return secret_state(obj.secret, obj.secret_fingerprint)


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

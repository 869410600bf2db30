"""Portal tokens of the proxy: made and revoked through the token service."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from integrations.admin.base import KeyManagersAdmin
from integrations.models import ProxyToken
from integrations.services import proxy_tokens


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
class ProxyTokenAdmin(KeyManagersAdmin):
    """Portal tokens: the digest is never shown; the token itself only once, when made."""

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

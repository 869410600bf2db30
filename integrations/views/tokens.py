"""Portal tokens in the portal: the list, a form to make one (shown once), and Revoke.

Everything here needs ``manage_keys``: a portal token spends the key's budget and reaches the
accounts it covers, as the key itself does.
"""

from __future__ import annotations

from http import HTTPStatus

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from integrations.models import ConnectedAccount, Lane
from integrations.permissions import MANAGE_KEYS, portal_permission_required
from integrations.services import proxy_tokens
from integrations.views.common import SERVICE_ERRORS


class ProxyTokenCreateForm(forms.Form):
    """What a person fills in to make a token; the token service checks the values."""

    name = forms.CharField(max_length=proxy_tokens.NAME_MAX_LENGTH, strip=True)
    accounts = forms.ModelMultipleChoiceField(
        queryset=ConnectedAccount.objects.select_related("api_key"),
        widget=forms.CheckboxSelectMultiple,
        help_text="The accounts the token may call CC for.",
    )
    lane = forms.ChoiceField(
        choices=Lane.choices,
        initial=Lane.INTERACTIVE,
        help_text="Unless a request sends X-CC-Lane.",
    )
    expires_days = forms.IntegerField(
        label="Expires after (days)",
        min_value=1,
        required=False,
        help_text="Empty: never.",
    )


def _page(request: HttpRequest, form: ProxyTokenCreateForm, *, status: int = HTTPStatus.OK):
    return render(
        request,
        "integrations/tokens.html",
        {"tokens": proxy_tokens.proxy_token_list(), "form": form},
        status=status,
    )


@portal_permission_required(MANAGE_KEYS)
@require_GET
def token_list(request: HttpRequest) -> HttpResponse:
    return _page(request, ProxyTokenCreateForm())


@never_cache
@portal_permission_required(MANAGE_KEYS)
@require_POST
def token_create(request: HttpRequest) -> HttpResponse:
    form = ProxyTokenCreateForm(request.POST)
    if not form.is_valid():
        return _page(request, form, status=HTTPStatus.BAD_REQUEST)
    data = form.cleaned_data
    try:
        made, secret = proxy_tokens.proxy_token_create(
            name=data["name"],
            accounts=data["accounts"],
            lane=data["lane"],
            expires_days=data["expires_days"],
        )
    except SERVICE_ERRORS as exc:
        field = getattr(exc, "field", None)
        form.add_error(field if field in form.fields else None, str(exc))
        return _page(request, form, status=HTTPStatus.BAD_REQUEST)
    # Rendered, not redirected: the token exists only in this answer (never_cache: no-store).
    return render(request, "integrations/token_made.html", {"token": made, "secret": secret})


@portal_permission_required(MANAGE_KEYS)
@require_POST
def token_revoke(request: HttpRequest, token_name: str) -> HttpResponse:
    try:
        revoked = proxy_tokens.proxy_token_revoke(name=token_name)
    except SERVICE_ERRORS as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Revoked {revoked}: the next request with it is refused.")
    return redirect("integrations:token_list")

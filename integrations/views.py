"""Thin views: parse the request, call a service or selector, render."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.decorators import method_decorator
from django_ratelimit.decorators import ratelimit

from integrations import selectors


@method_decorator(
    ratelimit(key="ip", rate="10/m", method="POST", block=False), name="dispatch"
)
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


@staff_member_required
def dashboard(request: HttpRequest) -> HttpResponse:
    keys = selectors.api_key_list()
    rows = [{"key": key, "usage": selectors.usage_today(api_key=key)} for key in keys]
    accounts = selectors.account_list()
    return render(
        request,
        "integrations/dashboard.html",
        {"key_rows": rows, "accounts": accounts},
    )

"""Logging in: the portal's one login page, which the admin's login is too.

Each attempt counts twice on the shared default cache: against the client's address (10 a
minute) and against the username it names (5 a minute, case-folded and stripped, so
``Admin`` and `` admin`` are one name). Over either limit the form comes back with status
429 and the password is not checked. A limiter that cannot count refuses the attempt (503):
it never lets one through unchecked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

from django.conf import settings
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django_ratelimit.core import get_usage

logger = logging.getLogger(__name__)


def _username(group: str, request: HttpRequest) -> str:
    return request.POST.get("username", "").strip().casefold()


@dataclass(frozen=True)
class LoginLimit:
    #: The counter's name in the cache: the same for every door that logs people in.
    group: str
    rate: str
    #: What is counted, as django-ratelimit takes it (a key name, or a function of the request).
    key: str | Callable[[str, HttpRequest], str]
    #: How the refusal names what was counted.
    counted: str


PER_ADDRESS: Final = LoginLimit("login:address", "10/m", "ip", "this address")
PER_USERNAME: Final = LoginLimit("login:username", "5/m", _username, "this user")

UNAVAILABLE: Final = (
    "The login limiter is unavailable (its cache does not answer), so no login can be checked "
    "now. Try again in a minute."
)


class LimiterUnavailable(Exception):
    """The cache the counters live on raised or did not count."""


def _count(request: HttpRequest, limit: LoginLimit) -> bool:
    """Count this attempt against ``limit``; whether it is over."""
    try:
        usage = get_usage(
            request,
            group=limit.group,
            key=limit.key,
            rate=limit.rate,
            method="POST",
            increment=True,
        )
    except Exception as exc:
        # Any cache backend's error (Redis down, a missing table): refuse, never let it pass.
        raise LimiterUnavailable(type(exc).__name__) from exc
    if usage is None:
        if not getattr(settings, "RATELIMIT_ENABLE", True):
            return False  # limiting switched off on purpose
        # RATELIMIT_FAIL_OPEN's answer when the cache did not count: the login does not open.
        raise LimiterUnavailable("the cache did not count the attempt")
    if usage["limit"] == 0:
        # django-ratelimit's answer when the cache neither added nor incremented the counter.
        raise LimiterUnavailable("the cache did not count the attempt")
    return usage["should_limit"]


def login_over_limit(request: HttpRequest) -> LoginLimit | None:
    """Count the attempt against both limits; the first it is over, or ``None``.

    Both counters move on every attempt, so switching usernames from one address, or
    addresses for one username, does not reset either. Raises :class:`LimiterUnavailable`.
    """
    over = [limit for limit in (PER_ADDRESS, PER_USERNAME) if _count(request, limit)]
    return over[0] if over else None


class RateLimitedLoginView(LoginView):
    """Django's login behind the per-address and per-username limits."""

    template_name = "registration/login.html"
    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        try:
            over = login_over_limit(request)
        except LimiterUnavailable as exc:
            logger.error("Login refused: the login limiter is unavailable (%s).", exc)
            return self._refused(UNAVAILABLE, HTTPStatus.SERVICE_UNAVAILABLE)
        if over is not None:
            return self._refused(
                f"Too many login attempts for {over.counted}. Wait a minute and try again.",
                HTTPStatus.TOO_MANY_REQUESTS,
            )
        return super().post(request, *args, **kwargs)

    def _refused(self, message: str, status: HTTPStatus) -> HttpResponse:
        # An unbound form: validating a bound one would check the password.
        username = self.request.POST.get("username", "")[:150]
        form = self.get_form_class()(self.request, initial={"username": username})
        context = self.get_context_data(form=form, refusal=message)
        return self.render_to_response(context, status=status)


class AdminLoginView(RateLimitedLoginView):
    """``/admin/login/``: the same page and the same counters, landing on the admin index.

    A logged-in user who may not enter the admin sees the form (to log in as someone else),
    not a redirect back to the admin, which would send them here again.
    """

    next_page = "admin:index"
    redirect_authenticated_user = False

    def get(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        user = request.user
        if user.is_active and user.is_staff:
            return HttpResponseRedirect(self.get_success_url())
        return super().get(request, *args, **kwargs)

    def get_context_data(self, **kwargs) -> dict:
        context = super().get_context_data(**kwargs)
        user = self.request.user
        if user.is_authenticated and not user.is_staff:
            context["not_admin"] = (
                f"You are logged in as {user.get_username()}, which may not enter the admin. "
                "Log in as a staff user to continue."
            )
        return context

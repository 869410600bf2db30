"""Who may do what in the portal: three permissions, and the checks every face makes.

=================  ===========================================================================
``view_portal``    the read-only pages: dashboard, accounts and their lists, jobs, the call log
``operate_portal`` connect, reconnect, disconnect, start a sync, run or cancel a job
``manage_keys``    add and change API keys
=================  ===========================================================================

They are declared on ``ApiKey.Meta.permissions`` (Django's codenames are ``integrations.<name>``)
and granted through three groups made by migration 0007: "Portal viewers", "Portal operators"
and "Key managers", each holding the ones before it. Superusers hold all of them, as Django
gives superusers every permission. The portal needs only the permission, not ``is_staff``;
the admin needs ``is_staff`` as well (Django's rule for entering it).

Used by the pages (:func:`portal_permission_required`), the admin (``ModelAdmin.has_*``) and
the commands (``PortalCommand.required_permission``). It sits beside the layers, not in one:
the three faces share it and it imports nothing of the portal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Final
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.shortcuts import resolve_url
from django_htmx.http import HttpResponseClientRedirect

VIEW_PORTAL: Final = "view_portal"
OPERATE_PORTAL: Final = "operate_portal"
MANAGE_KEYS: Final = "manage_keys"

APP_LABEL: Final = "integrations"


@dataclass(frozen=True)
class PortalPermission:
    codename: str
    #: The permission's name in the admin, exactly as in ``ApiKey.Meta.permissions``.
    name: str
    #: What it allows, as the end of "… may not ...".
    allows: str
    #: The smallest of migration 0007's groups that grants it.
    group: str

    @property
    def perm(self) -> str:
        """The string ``User.has_perm`` takes."""
        return f"{APP_LABEL}.{self.codename}"


PERMISSIONS: Final = {
    p.codename: p
    for p in (
        PortalPermission(
            VIEW_PORTAL,
            "View the portal: dashboard, accounts, jobs, calls",
            "see the portal's dashboard, accounts, jobs and calls",
            "Portal viewers",
        ),
        PortalPermission(
            OPERATE_PORTAL,
            "Connect, disconnect, sync, run and cancel",
            "connect, reconnect or disconnect accounts, start syncs, or run and cancel jobs",
            "Portal operators",
        ),
        PortalPermission(
            MANAGE_KEYS, "Add and change API keys", "add or change API keys", "Key managers"
        ),
    )
}

#: Who a check is about: a user of the project's user model, or the anonymous visitor.
User = AbstractBaseUser | AnonymousUser


def portal_permission(codename: str) -> PortalPermission:
    """The permission named ``codename``; a name that is none of the three is a programming
    error and fails at once (at import, for a decorator)."""
    try:
        return PERMISSIONS[codename]
    except KeyError:
        raise ValueError(
            f"{codename!r} is not a portal permission ({', '.join(PERMISSIONS)})."
        ) from None


def user_may(user: User, codename: str) -> bool:
    """Whether ``user`` holds the portal permission ``codename`` (an inactive user holds none)."""
    return bool(user.is_active and user.has_perm(portal_permission(codename).perm))


def refusal_message(user: User, codename: str) -> str:
    """One sentence: what ``user`` may not do, and who can change that."""
    permission = portal_permission(codename)
    name = user.get_username()
    return (
        f"Your login ({name}) may not {permission.allows}. A superuser can allow it by adding "
        f"{name} to the “{permission.group}” group in the admin (Users → {name} → Groups)."
    )


def login_url(next_url: str | None = None) -> str:
    """The portal's login page, returning to ``next_url`` after (not when it is the page the
    login lands on anyway)."""
    url = resolve_url(settings.LOGIN_URL)
    if not next_url or next_url == resolve_url(settings.LOGIN_REDIRECT_URL):
        return url
    query = QueryDict(mutable=True)
    query[REDIRECT_FIELD_NAME] = next_url
    return f"{url}?{query.urlencode(safe='/')}"


def _to_login(request: HttpRequest, login_next: str | None) -> HttpResponse:
    htmx = getattr(request, "htmx", None)
    if login_next is not None:
        target = resolve_url(login_next)
    elif htmx:
        # Back to the page that asked for the fragment (its path: the query stays behind).
        page = htmx.current_url_abs_path
        target = urlsplit(page).path if page else None
    elif request.method in ("GET", "HEAD"):
        target = request.get_full_path()
    else:
        # A POST cannot be replayed after logging in, and the page it came from may be the
        # callback's (with the code in its address): the login lands on the dashboard.
        target = None
    if htmx:
        # A polled fragment must not turn into the login form inside the page: htmx sends the
        # whole window to the login instead.
        return HttpResponseClientRedirect(login_url(target))
    return HttpResponseRedirect(login_url(target))


def portal_permission_required(
    codename: str, *, login_next: str | None = None
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """A page that needs the portal permission ``codename``.

    * Anonymous visitors go to the portal's login (``settings.LOGIN_URL``) with ``next`` set to
      this page, or to ``login_next`` (a URL or URL name) when the page's own address must not
      travel: the OAuth callback's query holds the code and the state.
    * A logged-in user without the permission gets the 403 page (``templates/403.html``, through
      Django's ``handler403``) saying what they may not do and who can grant it — never the
      login again, so there is no loop.

    Put it outermost: the refusal comes before the method check, the rate limit and any
    service call.
    """
    portal_permission(codename)  # fail at import on a misspelt name

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def guarded(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not request.user.is_authenticated:
                return _to_login(request, login_next)
            if not user_may(request.user, codename):
                raise PermissionDenied(refusal_message(request.user, codename))
            return view(request, *args, **kwargs)

        guarded.portal_permission = codename  # type: ignore[attr-defined]
        return guarded

    return decorator

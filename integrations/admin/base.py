"""What every model's admin shares: the portal's permissions, and how a stored secret is shown
(never the secret itself).
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from integrations.crypto import is_unreadable
from integrations.permissions import MANAGE_KEYS, OPERATE_PORTAL, VIEW_PORTAL, user_may

SECRET_UNREADABLE = "unreadable secret: re-enter it"
TOKENS_UNREADABLE = "tokens unreadable: reconnect"


def secret_state(secret: str, fingerprint: str, *, unreadable: str = SECRET_UNREADABLE) -> str:
    if is_unreadable(secret):
        return unreadable
    return f"stored · {fingerprint}" if secret else "—"


def write_only_secret(label: str, help_text: str) -> forms.CharField:
    """A form field for a secret that is stored but never shown again (empty: keep it)."""
    return forms.CharField(
        label=label,
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False),
        help_text=help_text,
    )


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


class KeyManagersAdmin(PortalAdmin):
    """What only key managers make, change and delete: API keys, alert destinations, portal
    tokens."""

    add_permission = MANAGE_KEYS
    change_permission = MANAGE_KEYS
    delete_permission = MANAGE_KEYS


class LedgerAdmin(PortalAdmin):
    """What the portal writes as it works (calls, usage, the limiter's state, the workers'
    heartbeats): read-only here, and only a superuser deletes a row."""

    delete_permission = None

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

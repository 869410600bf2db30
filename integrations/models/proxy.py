"""Portal tokens: how code outside this project calls Constant Contact through the proxy."""

from __future__ import annotations

import datetime as dt

from django.db import models
from django.utils import timezone

from integrations.models.accounts import ConnectedAccount
from integrations.models.usage import Lane

#: Every portal token starts with this, so a leaked one is easy to recognise (and to scan for).
PROXY_TOKEN_PREFIX = "ccp_"


class ProxyToken(models.Model):
    """A revocable credential an application holds instead of CC's tokens.

    Only a SHA-256 digest of the token is stored (the token is 256 random bits, so a fast
    digest is as strong as a slow one); ``hint`` is its first characters, enough to tell two
    tokens apart in a list, never enough to use one. The token reaches CC for the accounts in
    ``accounts`` only, on ``lane`` unless a request asks for the other lane.
    """

    name = models.CharField(max_length=100, unique=True)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    hint = models.CharField(max_length=16, editable=False)
    accounts = models.ManyToManyField(ConnectedAccount, related_name="proxy_tokens")
    lane = models.CharField(max_length=12, choices=Lane.choices, default=Lane.INTERACTIVE)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "portal token"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def is_expired(self, now: dt.datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())

    def is_usable(self, now: dt.datetime | None = None) -> bool:
        return self.revoked_at is None and not self.is_expired(now)

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.is_expired() else "active"

    @property
    def shown(self) -> str:
        """How the token is named on pages: its first characters, then an ellipsis."""
        return f"{self.hint}…"

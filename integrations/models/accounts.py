"""Connected CC accounts, their OAuth tokens and their health."""

from __future__ import annotations

import datetime as dt
import math
import zlib
from dataclasses import dataclass

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from integrations import crypto
from integrations.fields import EncryptedTextField
from integrations.models.keys import ApiKey


class AccountStatus(models.TextChoices):
    ACTIVE = "active", "Connected"
    NEEDS_RECONNECT = "needs_reconnect", "Needs reconnect"
    DISCONNECTED = "disconnected", "Disconnected"


class RefreshMode(models.TextChoices):
    ROTATING = "rotating", "Rotating"
    LONG_LIVED = "long_lived", "Long-lived"
    UNKNOWN = "unknown", "Unknown"


@dataclass(frozen=True)
class AccountHealth:
    """How an account is, in the one wording every page uses (headers, lists, dashboard)."""

    #: ``connected``, ``refresh_failing``, ``tokens_unreadable``, ``needs_reconnect`` or
    #: ``disconnected``: also the CSS class of its badge.
    code: str
    label: str
    #: Why, when something is wrong; empty when connected.
    reason: str = ""

    @property
    def attention(self) -> bool:
        """Someone has to act (reconnect, restore a key, look at failing refreshes)."""
        return self.code in ("refresh_failing", "tokens_unreadable", "needs_reconnect")


class ConnectedAccount(models.Model):
    """A CC account connected through an :class:`ApiKey`, with its OAuth tokens.

    Tokens are encrypted at rest. ``token_version`` moves on every token write and fences the
    refresh lease, so a refresh that lost its lease can never overwrite a newer pair.
    """

    api_key = models.ForeignKey(ApiKey, on_delete=models.PROTECT, related_name="accounts")
    label = models.CharField(max_length=200, blank=True, help_text="Account name or email.")
    cc_user_id = models.CharField("CC user (sub)", max_length=200, blank=True)
    platform_user_id = models.CharField(max_length=200, blank=True)
    #: From CC's ``GET /account/summary`` at connect and reconnect (empty when it was not read).
    organization_name = models.CharField(max_length=200, blank=True)
    login_email = models.CharField("login email", max_length=254, blank=True)
    scopes = models.JSONField(default=list, blank=True)

    access_token = EncryptedTextField(blank=True)
    refresh_token = EncryptedTextField(blank=True)
    access_expires_at = models.DateTimeField(null=True, blank=True)
    refresh_mode = models.CharField(
        max_length=16, choices=RefreshMode.choices, default=RefreshMode.UNKNOWN
    )
    refresh_token_issued_at = models.DateTimeField(null=True, blank=True)
    refresh_token_last_used_at = models.DateTimeField(null=True, blank=True)
    token_version = models.PositiveBigIntegerField(default=0)

    # Refresh lease: taken by compare-and-set on token_version, never held in a transaction.
    refresh_lease_owner = models.CharField(max_length=64, blank=True)
    refresh_lease_expires_at = models.DateTimeField(null=True, blank=True)
    refresh_backoff_until = models.DateTimeField(null=True, blank=True)
    refresh_failures = models.PositiveIntegerField(default=0)

    status = models.CharField(
        max_length=20, choices=AccountStatus.choices, default=AccountStatus.ACTIVE
    )
    status_reason = models.TextField(blank=True)

    # The account's part of its key (see services.budgets): weight in the key's fair share, and
    # an optional daily cap in calls or as a share of the key's day.
    share_weight = models.PositiveSmallIntegerField(
        "weight",
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(1000)],
        help_text="Background slots are shared between the key's accounts in proportion to this.",
    )
    daily_cap = models.PositiveIntegerField(
        "daily cap (calls)",
        null=True,
        blank=True,
        help_text="At most this many calls per UTC day, both lanes. Empty: no cap of its own.",
    )
    daily_share = models.FloatField(
        "daily cap (share of the key's day)",
        null=True,
        blank=True,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="At most this share (0 to 1) of the key's daily limit. Empty: none.",
    )
    connected_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["label", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["api_key", "cc_user_id"],
                condition=~Q(cc_user_id=""),
                name="account_unique_cc_user_per_key",
            )
        ]
        indexes = [models.Index(fields=["status", "access_expires_at"])]

    def __str__(self) -> str:
        return self.display_name

    @property
    def display_name(self) -> str:
        """How every page, the admin and the commands name the account: its organisation and
        login email from CC's account summary ("Acme (owner@acme.example)"), either one alone
        when only one is known, else its label, CC user id or row id."""
        if self.organization_name and self.login_email:
            return f"{self.organization_name} ({self.login_email})"
        return (
            self.organization_name
            or self.login_email
            or self.label
            or self.cc_user_id
            or f"account {self.pk}"
        )

    def daily_cap_for(self, per_day: int) -> int | None:
        """The account's cap in calls on a key allowing ``per_day``: the smaller of its cap and
        its share of the key's day, or None when it has neither."""
        caps = []
        if self.daily_cap is not None:
            caps.append(self.daily_cap)
        if self.daily_share is not None:
            caps.append(math.floor(per_day * self.daily_share + 1e-9))
        return min(caps) if caps else None

    @property
    def is_active(self) -> bool:
        return self.status == AccountStatus.ACTIVE

    @property
    def needs_reconnect(self) -> bool:
        return self.status == AccountStatus.NEEDS_RECONNECT

    def health(self, *, at: dt.datetime | None = None) -> AccountHealth:
        """The account's state as people are shown it, from its status, its refresh record
        and whether its tokens can be read."""
        if self.status == AccountStatus.DISCONNECTED:
            return AccountHealth("disconnected", "Disconnected", self.status_reason)
        if self.status == AccountStatus.NEEDS_RECONNECT:
            return AccountHealth(
                "needs_reconnect",
                "Needs reconnect",
                self.status_reason or "Constant Contact no longer accepts its refresh token.",
            )
        if self.tokens_unreadable:
            return AccountHealth(
                "tokens_unreadable",
                "Tokens unreadable",
                "No key in FIELD_ENCRYPTION_KEYS opens its tokens: restore the key, or reconnect.",
            )
        if self.refresh_failures:
            return AccountHealth(
                "refresh_failing",
                "Refresh failing",
                f"The last {self.refresh_failures} token refresh(es) failed"
                + (f": {self.status_reason}" if self.status_reason else "."),
            )
        return AccountHealth("connected", "Connected")

    def has_scope(self, scope: str) -> bool:
        return scope in (self.scopes or [])

    def is_access_token_expired(self, *, at: dt.datetime | None = None) -> bool:
        if not self.access_token or self.access_expires_at is None:
            return True
        return self.access_expires_at <= (at or timezone.now())

    def access_expires_in(self, *, at: dt.datetime | None = None) -> dt.timedelta | None:
        if self.access_expires_at is None:
            return None
        return self.access_expires_at - (at or timezone.now())

    def refresh_token_idle_days(self, *, at: dt.datetime | None = None) -> int | None:
        last = self.refresh_token_last_used_at or self.refresh_token_issued_at
        if last is None or not self.refresh_token:
            return None
        return ((at or timezone.now()) - last).days

    @property
    def refresh_idle_days(self) -> int | None:
        return self.refresh_token_idle_days()

    @property
    def refresh_spread_seconds(self) -> int:
        """A stable per-account offset (0-119 s) so tokens minted together fall due apart."""
        return zlib.crc32(f"{self.api_key_id}:{self.pk}".encode()) % 120

    @property
    def tokens_unreadable(self) -> bool:
        """A stored token cannot be opened with the configured keys."""
        return crypto.is_unreadable(self.access_token) or crypto.is_unreadable(self.refresh_token)

    @property
    def access_token_fingerprint(self) -> str:
        return crypto.fingerprint(self.access_token)

    @property
    def refresh_token_fingerprint(self) -> str:
        return crypto.fingerprint(self.refresh_token)

"""ccportal's data model.

* :class:`ApiKey` — a Constant Contact application (client_id) and its rate-limit tier.
* :class:`ConnectedAccount` — a CC account connected through a key, with its tokens.
* :class:`KeyLimiterState` — the shared ledger the quota service books calls against.
* :class:`ApiCall` / :class:`DailyUsage` — every attempt, and per-key daily rollups.
* :class:`BulkJob` — a resumable list-membership sync.

Models answer questions about themselves; rules live in ``integrations.services``.
"""

from __future__ import annotations

import datetime as dt
import zlib

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from integrations import crypto
from integrations.fields import EncryptedTextField


class Tier(models.TextChoices):
    STANDARD = "standard", "Standard (4/s, 10,000/day)"
    PARTNER = "partner", "Partner (10/s, 250,000/day)"
    CUSTOM = "custom", "Custom limits"


# CC's published per-key limits: https://developer.constantcontact.com/api_guide/rate_limits.html
TIER_LIMITS: dict[str, tuple[int, int]] = {
    Tier.STANDARD: (4, 10_000),
    Tier.PARTNER: (10, 250_000),
}


class ApiKey(models.Model):
    """A Constant Contact application. Limits are per key, shared by all its accounts."""

    name = models.CharField(max_length=100)
    client_id = models.CharField("client id (API key)", max_length=100, unique=True)
    client_secret = EncryptedTextField(
        blank=True, help_text="Empty for a CC PKCE application, which has no secret."
    )
    redirect_uri = models.URLField(
        max_length=500, help_text="Exactly as registered with Constant Contact."
    )
    tier = models.CharField(max_length=16, choices=Tier.choices, default=Tier.STANDARD)
    custom_per_second = models.PositiveIntegerField(null=True, blank=True)
    custom_per_day = models.PositiveIntegerField(null=True, blank=True)
    use_pkce = models.BooleanField(
        "send PKCE",
        default=False,
        help_text="On for PKCE apps (no secret). CC documents PKCE only for public clients.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "API key"
        constraints = [
            models.CheckConstraint(
                name="apikey_custom_tier_has_limits",
                condition=~Q(tier=Tier.CUSTOM) | Q(custom_per_second__gt=0, custom_per_day__gt=0),
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.client_id})"

    @property
    def per_second(self) -> int:
        if self.tier == Tier.CUSTOM:
            return int(self.custom_per_second or 0)
        return TIER_LIMITS[self.tier][0]

    @property
    def per_day(self) -> int:
        if self.tier == Tier.CUSTOM:
            return int(self.custom_per_day or 0)
        return TIER_LIMITS[self.tier][1]

    @property
    def is_public_client(self) -> bool:
        return not self.client_secret

    @property
    def client_secret_fingerprint(self) -> str:
        return crypto.fingerprint(self.client_secret)


class AccountStatus(models.TextChoices):
    ACTIVE = "active", "Connected"
    NEEDS_RECONNECT = "needs_reconnect", "Needs reconnect"
    DISCONNECTED = "disconnected", "Disconnected"


class RefreshMode(models.TextChoices):
    ROTATING = "rotating", "Rotating"
    LONG_LIVED = "long_lived", "Long-lived"
    UNKNOWN = "unknown", "Unknown"


class ConnectedAccount(models.Model):
    """A CC account connected through an :class:`ApiKey`, with its OAuth tokens.

    Tokens are encrypted at rest. ``token_version`` moves on every token write and fences the
    refresh lease, so a refresh that lost its lease can never overwrite a newer pair.
    """

    api_key = models.ForeignKey(ApiKey, on_delete=models.PROTECT, related_name="accounts")
    label = models.CharField(max_length=200, blank=True, help_text="Account name or email.")
    cc_user_id = models.CharField("CC user (sub)", max_length=200, blank=True)
    platform_user_id = models.CharField(max_length=200, blank=True)
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
        return self.label or self.cc_user_id or f"account {self.pk}"

    @property
    def is_active(self) -> bool:
        return self.status == AccountStatus.ACTIVE

    @property
    def needs_reconnect(self) -> bool:
        return self.status == AccountStatus.NEEDS_RECONNECT

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
    def access_token_fingerprint(self) -> str:
        return crypto.fingerprint(self.access_token)

    @property
    def refresh_token_fingerprint(self) -> str:
        return crypto.fingerprint(self.refresh_token)


class KeyLimiterState(models.Model):
    """The database store's ledger for one key (see ``services.quota_stores``).

    Times are seconds since the epoch as floats: one clock for every process on the database
    host, compared and advanced atomically. ``day_count`` counts the calls booked against
    ``day``; ``next_day_count`` those already booked against the day after (calls sent within
    the guard band around 00:00 UTC count against both days). ``stopped_until`` holds every
    booking after CC answered ``quota_exceeded``. ``background_line_at`` is when the next deferred
    background caller's turn comes.
    """

    api_key = models.OneToOneField(
        ApiKey, on_delete=models.CASCADE, primary_key=True, related_name="limiter"
    )
    next_slot_at = models.FloatField(default=0.0)
    day = models.DateField(null=True, blank=True)
    day_count = models.PositiveIntegerField(default=0)
    next_day_count = models.PositiveIntegerField(default=0)
    paused_until = models.FloatField(default=0.0)
    margin = models.FloatField(default=0.0)
    margin_widened_at = models.FloatField(default=0.0)
    stopped_until = models.FloatField(default=0.0)
    token_next_slot_at = models.FloatField(default=0.0)
    background_line_at = models.FloatField(default=0.0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "key limiter state"

    def __str__(self) -> str:
        return f"ledger of key {self.api_key_id}"


class CallKind(models.TextChoices):
    API = "api", "API"
    TOKEN = "token", "Token endpoint"


class Lane(models.TextChoices):
    INTERACTIVE = "interactive", "Interactive"
    BACKGROUND = "background", "Background"


class ApiCall(models.Model):
    """One attempt at a CC request (API or token endpoint), successful or not."""

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="calls")
    account = models.ForeignKey(
        ConnectedAccount, on_delete=models.SET_NULL, null=True, blank=True, related_name="calls"
    )
    kind = models.CharField(max_length=8, choices=CallKind.choices, default=CallKind.API)
    method = models.CharField(max_length=8)
    path_template = models.CharField(max_length=200)
    status_code = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Empty when no response arrived."
    )
    error_key = models.CharField(max_length=100, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    attempt = models.PositiveSmallIntegerField(default=1)
    lane = models.CharField(max_length=12, choices=Lane.choices, default=Lane.INTERACTIVE)
    bulk_job = models.ForeignKey(
        "BulkJob", on_delete=models.SET_NULL, null=True, blank=True, related_name="calls"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = "API call"
        indexes = [
            models.Index(fields=["api_key", "-created_at"]),
            models.Index(fields=["account", "-created_at"]),
            models.Index(fields=["-created_at"]),
            models.Index(fields=["api_key", "status_code", "-created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.method} {self.path_template} → {self.status_code or 'no response'}"


class DailyUsage(models.Model):
    """Per key and UTC day: what ``ApiCall`` recorded, kept current as calls are recorded."""

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="daily_usage")
    date = models.DateField()
    calls = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    throttled = models.PositiveIntegerField("throttled 429s", default=0)
    quota_exceeded = models.PositiveIntegerField("quota 429s", default=0)
    token_calls = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-date", "api_key"]
        verbose_name_plural = "daily usage"
        constraints = [
            models.UniqueConstraint(fields=["api_key", "date"], name="usage_one_row_per_key_day")
        ]

    def __str__(self) -> str:
        return f"{self.api_key.name} {self.date}: {self.calls}"


class SyncMode(models.TextChoices):
    REPLACE = "replace", "Replace: the list becomes exactly the desired set"
    ADD = "add", "Add: add the desired contacts, remove nobody"


class JobState(models.TextChoices):
    DRAFT = "draft", "Draft"
    PLANNING = "planning", "Planning"
    PLANNED = "planned", "Planned"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class BulkJob(models.Model):
    """Make CC list ``list_id`` contain the desired contacts, via export + diff + bulk imports.

    Every step ends in a recovery point stored here (phase, step data, activity ids), so a job
    whose worker died is resumed by another without repeating effects.
    """

    TERMINAL_STATES = (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)

    account = models.ForeignKey(
        ConnectedAccount, on_delete=models.CASCADE, related_name="bulk_jobs"
    )
    list_id = models.CharField(max_length=64)
    list_name = models.CharField(max_length=255, blank=True)
    mode = models.CharField(max_length=10, choices=SyncMode.choices, default=SyncMode.REPLACE)
    source_file = models.CharField(max_length=500, blank=True)
    source_list_id = models.CharField(max_length=64, blank=True)
    state = models.CharField(max_length=12, choices=JobState.choices, default=JobState.DRAFT)
    phase = models.CharField(max_length=40, blank=True)
    plan = models.JSONField(default=dict, blank=True)
    progress = models.JSONField(default=dict, blank=True)
    checkpoint = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    calls_planned = models.PositiveIntegerField(default=0)
    calls_used = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    paused_until = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "updated_at"])]

    def __str__(self) -> str:
        return f"sync {self.list_name or self.list_id} ({self.get_state_display()})"

    @property
    def is_finished(self) -> bool:
        return self.state in self.TERMINAL_STATES

"""Alerts: where they go (webhooks, e-mail), what happened, and each attempt to tell someone."""

from __future__ import annotations

import datetime as dt
import uuid
from urllib.parse import urlsplit

from django.db import models
from django.utils import timezone

from integrations import crypto
from integrations.fields import EncryptedTextField


class AlertKind(models.TextChoices):
    WEBHOOK = "webhook", "Webhook"
    EMAIL = "email", "E-mail"


class AlertEventType(models.TextChoices):
    """Every event an alert destination can ask for; ``test`` is sent on request only."""

    QUOTA_FORECAST = "quota.forecast", "Quota forecast: a key runs out before the reset"
    QUOTA_THRESHOLD = "quota.threshold", "Quota threshold: 75%, 90% or 100% of the day used"
    QUOTA_THROTTLED = "quota.throttled", "Throttled: CC answered 429 although the call was booked"
    ACCOUNT_NEEDS_RECONNECT = "account.needs_reconnect", "Account needs a reconnect"
    ACCOUNT_REFRESH_FAILING = "account.refresh_failing", "Account's token refreshes failing"
    JOB_PAUSED = "job.paused", "Sync job paused"
    JOB_FAILED = "job.failed", "Sync job failed"
    JOB_COMPLETED = "job.completed", "Sync job completed"
    TEST = "test", "Test"

    @classmethod
    def subscribable(cls) -> list[str]:
        """The events a destination may choose (all but ``test``, which every one receives)."""
        return [value for value in cls.values if value != cls.TEST]


class AlertDestination(models.Model):
    """A webhook URL or an e-mail address that receives alert events.

    ``events`` lists the event types it wants; empty means every one. A webhook's ``secret``
    signs each delivery (``X-CCPortal-Signature``); it is encrypted at rest and never shown,
    only its fingerprint.
    """

    kind = models.CharField(max_length=8, choices=AlertKind.choices)
    target = models.CharField(max_length=500, help_text="The webhook's URL or the address.")
    secret = EncryptedTextField(blank=True, help_text="Webhooks: the key their signatures use.")
    events = models.JSONField(default=list, blank=True, help_text="Empty: every event.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pk"]
        verbose_name = "alert destination"

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.target_display}"

    def wants(self, event_type: str) -> bool:
        """Whether an event of ``event_type`` goes here (a test always does)."""
        if not self.enabled:
            return False
        return event_type == AlertEventType.TEST or not self.events or event_type in self.events

    @property
    def target_display(self) -> str:
        """The address, or the URL without its query and credentials (where receivers often
        keep a token of their own)."""
        if self.kind != AlertKind.WEBHOOK:
            return self.target
        parts = urlsplit(self.target)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        shown = f"{parts.scheme}://{host}{parts.path}"
        return shown + ("?…" if parts.query else "")

    @property
    def events_display(self) -> str:
        return ", ".join(self.events) if self.events else "all events"

    @property
    def secret_fingerprint(self) -> str:
        return crypto.fingerprint(self.secret)


class AlertEvent(models.Model):
    """One occurrence of something worth telling. ``dedupe_key`` names the occurrence (the
    key, the day and the threshold; the account and the token version it failed at; …), so
    however often it is noticed it is recorded, and sent, once."""

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    event_type = models.CharField(max_length=40, choices=AlertEventType.choices)
    dedupe_key = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = "alert event"

    def __str__(self) -> str:
        return f"{self.event_type} ({self.created_at:%Y-%m-%d %H:%M} UTC)"

    def payload(self) -> dict:
        """The JSON a webhook receives."""
        return {
            "event": self.event_type,
            "id": str(self.uid),
            "created": self.created_at.astimezone(dt.UTC).isoformat(),
            "data": self.data,
        }


class DeliveryState(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed (gave up)"


class AlertDelivery(models.Model):
    """One event on its way to one destination: attempted until it is delivered or its
    event is too old to be worth sending (then ``failed``). ``last_error`` never holds a
    secret."""

    destination = models.ForeignKey(
        AlertDestination, on_delete=models.CASCADE, related_name="deliveries"
    )
    event = models.ForeignKey(AlertEvent, on_delete=models.CASCADE, related_name="deliveries")
    state = models.CharField(
        max_length=10, choices=DeliveryState.choices, default=DeliveryState.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="When a pending delivery is tried (again)."
    )
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = "alert delivery"
        verbose_name_plural = "alert deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["destination", "event"], name="alert_delivery_once_per_destination"
            )
        ]
        indexes = [models.Index(fields=["state", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.event.event_type} → {self.destination} ({self.get_state_display()})"

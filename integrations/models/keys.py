"""API keys: a Constant Contact application (client_id) and its rate-limit tier."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from integrations import crypto
from integrations.constant_contact.limits import TIER_LIMITS
from integrations.fields import EncryptedTextField


class Tier(models.TextChoices):
    STANDARD = "standard", "Standard (4/s, 10,000/day)"
    PARTNER = "partner", "Partner (10/s, 250,000/day)"
    CUSTOM = "custom", "Custom limits"


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
        # The portal's own permissions (integrations.permissions says what each allows). They
        # sit on the key, the root every account, job and call hangs from.
        permissions = [
            ("view_portal", "View the portal: dashboard, accounts, jobs, calls"),
            ("operate_portal", "Connect, disconnect, sync, run and cancel"),
            ("manage_keys", "Add and change API keys"),
        ]
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
        return not self.client_secret and not self.secret_unreadable

    @property
    def secret_unreadable(self) -> bool:
        """The stored client secret cannot be opened with the configured keys."""
        return crypto.is_unreadable(self.client_secret)

    @property
    def client_secret_fingerprint(self) -> str:
        return crypto.fingerprint(self.client_secret)

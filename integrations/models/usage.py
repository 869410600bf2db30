"""The quota ledger, every call, and the usage rollups per key, account, hour and day."""

from __future__ import annotations

from http import HTTPStatus

from django.db import models
from django.utils import timezone

from integrations.models.accounts import ConnectedAccount
from integrations.models.keys import ApiKey


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


class AccountLimiterState(models.Model):
    """One flow of an account in its key's ledger (see ``services.quota_stores.rules``): the
    account's calls through one door (``token``: the portal token of the proxy they come
    through, 0 for the portal's own calls), with its clock in the key's fair share (background
    calls and bounded interactive ones) and its calls booked today for the account's cap.

    The clock counts turns, one per call booked in fair share: ``anchor_turn`` at ``anchor_at`` (epoch
    seconds), then ``rate`` turns per second; ``next_turn`` is the turn the account's next new
    call gets. ``weight`` (as last booked) counts in the key's active weight while
    ``active_until`` is in the future.
    """

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="account_limiters")
    account = models.ForeignKey(ConnectedAccount, on_delete=models.CASCADE, related_name="limiters")
    # A number, not a foreign key: 0 stands for the portal itself, and a revoked token's
    # flow simply falls idle.
    token = models.PositiveBigIntegerField(
        default=0, help_text="The portal token the calls come through; 0 for the portal's own."
    )
    active_until = models.FloatField(default=0.0)
    anchor_at = models.FloatField(default=0.0)
    anchor_turn = models.FloatField(default=0.0)
    rate = models.FloatField(default=0.0)
    next_turn = models.FloatField(default=0.0)
    weight = models.FloatField(default=1.0)
    day = models.DateField(null=True, blank=True)
    day_count = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "account limiter state"
        constraints = [
            models.UniqueConstraint(
                fields=["api_key", "account", "token"], name="account_flow_unique_per_key"
            )
        ]
        # Each fair booking sums the weight of the key's accounts active now.
        indexes = [models.Index(fields=["api_key", "active_until"])]

    def __str__(self) -> str:
        through = f" through token {self.token}" if self.token else ""
        return f"ledger of account {self.account_id}{through} on key {self.api_key_id}"


class CallKind(models.TextChoices):
    API = "api", "API"
    TOKEN = "token", "Token endpoint"


class Lane(models.TextChoices):
    """Which share of a key's day a call spends: people's (``interactive``, with a reserve
    background work cannot touch) or background work's."""

    INTERACTIVE = "interactive", "Interactive"
    BACKGROUND = "background", "Background"

    @classmethod
    def check(cls, value: str) -> Lane:
        """``value`` as a lane, or ValueError naming the lanes there are."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(
                f"lane must be one of {', '.join(cls.values)}, not {value!r}"
            ) from None


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
    error_detail = models.TextField(
        blank=True, help_text="CC's error body, scrubbed of secrets and shortened."
    )
    latency_ms = models.PositiveIntegerField(default=0)
    slot_wait_ms = models.PositiveIntegerField(
        "slot wait (ms)",
        default=0,
        help_text="How long the call waited for its send slot (its turn in the key's fair share).",
    )
    attempt = models.PositiveSmallIntegerField(default=1)
    lane = models.CharField(max_length=12, choices=Lane.choices, default=Lane.INTERACTIVE)
    bulk_job = models.ForeignKey(
        "BulkJob", on_delete=models.SET_NULL, null=True, blank=True, related_name="calls"
    )
    proxy_token = models.ForeignKey(
        "ProxyToken",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="calls",
        help_text="The portal token of a call made through the proxy.",
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
            # The call log's filters: each walks its index in the log's order (-created_at,
            # -id), so a page is a seek and 51 rows whatever the table's size.
            models.Index(fields=["status_code", "-created_at", "-id"]),
            models.Index(fields=["lane", "-created_at", "-id"]),
            models.Index(fields=["bulk_job", "-created_at", "-id"]),
            models.Index(fields=["proxy_token", "-created_at", "-id"]),
            models.Index(fields=["path_template", "-created_at", "-id"]),
        ]

    def __str__(self) -> str:
        return f"{self.method} {self.path_template} → {self.status_code or 'no response'}"

    @property
    def failed(self) -> bool:
        """No answer arrived, or CC answered with an error status."""
        return self.status_code is None or self.status_code >= HTTPStatus.BAD_REQUEST


class DailyUsage(models.Model):
    """Per key and UTC day: what ``ApiCall`` recorded, kept current as calls are recorded.

    ``calls`` counts API calls, what CC's daily budget counts; token-endpoint calls spend none
    of it and are ``token_calls``.
    """

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="daily_usage")
    date = models.DateField()
    calls = models.PositiveIntegerField("API calls", default=0)
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


class HourlyUsage(models.Model):
    """Per key, account and UTC hour: the calls ``ApiCall`` recorded, kept current as they
    are recorded. The dashboard reads these instead of scanning calls, and they outlive the
    call log (``CC_CALL_LOG_DAYS``) by far (``USAGE_ROLLUP_DAYS``). Calls made for no account
    (exchanging a Connect's code) are counted with ``account`` empty."""

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="hourly_usage")
    account = models.ForeignKey(
        ConnectedAccount,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="hourly_usage",
    )
    hour = models.DateTimeField(help_text="The UTC hour the calls were made in.")
    calls = models.PositiveIntegerField("API calls", default=0)
    errors = models.PositiveIntegerField(default=0)
    throttled = models.PositiveIntegerField("throttled 429s", default=0)
    quota_exceeded = models.PositiveIntegerField("quota 429s", default=0)
    token_calls = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-hour", "api_key", "account"]
        verbose_name_plural = "hourly usage"
        constraints = [
            models.UniqueConstraint(
                fields=["api_key", "account", "hour"],
                condition=models.Q(account__isnull=False),
                name="hourly_usage_one_row_per_account_hour",
            ),
            models.UniqueConstraint(
                fields=["api_key", "hour"],
                condition=models.Q(account__isnull=True),
                name="hourly_usage_one_row_per_keyonly_hour",
            ),
        ]
        indexes = [models.Index(fields=["api_key", "hour"]), models.Index(fields=["hour"])]

    def __str__(self) -> str:
        return f"{self.api_key_id}/{self.account_id or '-'} {self.hour:%Y-%m-%d %H}h: {self.calls}"

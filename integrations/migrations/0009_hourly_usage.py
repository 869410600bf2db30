"""The hourly rollup per key and account, filled from the calls already recorded."""

import datetime as dt

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import Count, Q
from django.db.models.functions import TruncHour


def hourly_usage_backfill(apps, schema_editor):
    db = schema_editor.connection.alias
    ApiCall = apps.get_model("integrations", "ApiCall")
    HourlyUsage = apps.get_model("integrations", "HourlyUsage")
    rows = (
        ApiCall.objects.using(db)
        .annotate(at_hour=TruncHour("created_at", tzinfo=dt.UTC))
        .values("api_key_id", "account_id", "at_hour")
        .annotate(
            calls=Count("pk", filter=Q(kind="api")),
            errors=Count("pk", filter=Q(status_code__isnull=True) | Q(status_code__gte=400)),
            throttled=Count("pk", filter=Q(status_code=429, error_key="throttled")),
            quota_exceeded=Count("pk", filter=Q(status_code=429, error_key="quota_exceeded")),
            token_calls=Count("pk", filter=Q(kind="token")),
        )
        .order_by()
    )
    HourlyUsage.objects.using(db).bulk_create(
        (
            HourlyUsage(
                api_key_id=row["api_key_id"],
                account_id=row["account_id"],
                hour=row["at_hour"],
                calls=row["calls"],
                errors=row["errors"],
                throttled=row["throttled"],
                quota_exceeded=row["quota_exceeded"],
                token_calls=row["token_calls"],
            )
            for row in rows.iterator()
        ),
        batch_size=1000,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("integrations", "0008_cache_table"),
    ]

    operations = [
        migrations.CreateModel(
            name="HourlyUsage",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("hour", models.DateTimeField(help_text="The UTC hour the calls were made in.")),
                ("calls", models.PositiveIntegerField(default=0, verbose_name="API calls")),
                ("errors", models.PositiveIntegerField(default=0)),
                (
                    "throttled",
                    models.PositiveIntegerField(default=0, verbose_name="throttled 429s"),
                ),
                (
                    "quota_exceeded",
                    models.PositiveIntegerField(default=0, verbose_name="quota 429s"),
                ),
                ("token_calls", models.PositiveIntegerField(default=0)),
                (
                    "account",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="hourly_usage",
                        to="integrations.connectedaccount",
                    ),
                ),
                (
                    "api_key",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="hourly_usage",
                        to="integrations.apikey",
                    ),
                ),
            ],
            options={
                "verbose_name_plural": "hourly usage",
                "ordering": ["-hour", "api_key", "account"],
                "indexes": [
                    models.Index(fields=["api_key", "hour"], name="integration_api_key_37b9ec_idx"),
                    models.Index(fields=["hour"], name="integration_hour_c5ee11_idx"),
                ],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("account__isnull", False)),
                        fields=("api_key", "account", "hour"),
                        name="hourly_usage_one_row_per_account_hour",
                    ),
                    models.UniqueConstraint(
                        condition=models.Q(("account__isnull", True)),
                        fields=("api_key", "hour"),
                        name="hourly_usage_one_row_per_keyonly_hour",
                    ),
                ],
            },
        ),
        migrations.RunPython(hourly_usage_backfill, migrations.RunPython.noop),
    ]

"""Read-only queries the pages and commands share."""

from __future__ import annotations

from django.db.models import QuerySet
from django.utils import timezone

from integrations.models import ApiKey, ConnectedAccount, DailyUsage


def api_key_list() -> QuerySet[ApiKey]:
    return ApiKey.objects.order_by("name")


def account_list(*, api_key: ApiKey | None = None) -> QuerySet[ConnectedAccount]:
    accounts = ConnectedAccount.objects.select_related("api_key").order_by("label", "pk")
    if api_key is not None:
        accounts = accounts.filter(api_key=api_key)
    return accounts


def usage_today(*, api_key: ApiKey) -> DailyUsage | None:
    return DailyUsage.objects.filter(api_key=api_key, date=timezone.now().date()).first()

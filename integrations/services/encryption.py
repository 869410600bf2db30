"""Re-encrypt every stored secret under the newest FIELD_ENCRYPTION_KEYS key."""

from __future__ import annotations

from collections.abc import Callable

from django.apps import apps
from django.db import transaction

from integrations.fields import EncryptedTextField


def encryption_keys_rotate(
    *, batch_size: int = 500, on_progress: Callable[[str, int], None] | None = None
) -> dict[str, int]:
    """Rewrite each encrypted value with the newest key; returns rows rewritten per model.

    Reading opens a value with whichever key wrote it; saving encrypts with the first key.
    After this, keys other than the first can be removed from FIELD_ENCRYPTION_KEYS.
    """
    rewritten: dict[str, int] = {}
    for model in apps.get_app_config("integrations").get_models():
        fields = [f.name for f in model._meta.fields if isinstance(f, EncryptedTextField)]
        if not fields:
            continue
        count = 0
        pks = list(model.objects.order_by("pk").values_list("pk", flat=True))
        for start in range(0, len(pks), batch_size):
            with transaction.atomic():
                # Locked, so a token refresh landing meanwhile is not overwritten by stale values.
                batch = pks[start : start + batch_size]
                rows = list(model.objects.select_for_update().filter(pk__in=batch))
                model.objects.bulk_update(rows, fields)
            count += len(rows)
            if on_progress:
                on_progress(model._meta.label, count)
        rewritten[model._meta.label] = count
    return rewritten

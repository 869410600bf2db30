"""Re-encrypt every stored secret under the newest FIELD_ENCRYPTION_KEYS key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from django.apps import apps
from django.db import transaction

from integrations import crypto
from integrations.fields import EncryptedTextField


@dataclass
class RotationReport:
    #: Rows rewritten under the newest key, per model label.
    rewritten: dict[str, int] = field(default_factory=dict)
    #: Values no configured key opens, as "<model label> #<pk> <field>"; left as they were.
    unreadable: list[str] = field(default_factory=list)


def encryption_keys_rotate(
    *, batch_size: int = 500, on_progress: Callable[[str, int], None] | None = None
) -> RotationReport:
    """Rewrite each encrypted value with the newest key.

    Reading opens a value with whichever key wrote it; saving encrypts with the first key. A
    value no key opens is written back exactly as it was and named in the report: the keys
    other than the first can be removed only when that list is empty.
    """
    report = RotationReport()
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
            report.unreadable.extend(
                f"{model._meta.label} #{row.pk} {name}"
                for row in rows
                for name in fields
                if crypto.is_unreadable(getattr(row, name))
            )
            if on_progress:
                on_progress(model._meta.label, count)
        report.rewritten[model._meta.label] = count
    return report

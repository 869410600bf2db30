from __future__ import annotations

from django.core.management.base import BaseCommand

from integrations.services.encryption import encryption_keys_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret with the first FIELD_ENCRYPTION_KEYS key. "
        "Afterwards the older keys can be removed."
    )

    def handle(self, *args, **options) -> None:
        counts = encryption_keys_rotate(
            on_progress=lambda label, done: self.stdout.write(
                f"  {label}: {done} rows", ending="\r"
            )
        )
        for label, count in counts.items():
            self.stdout.write(f"{label}: {count} rows re-encrypted")
        self.stdout.write(self.style.SUCCESS("Done: every secret is under the newest key."))

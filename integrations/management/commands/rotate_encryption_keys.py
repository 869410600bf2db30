from __future__ import annotations

from django.core.management.base import CommandError

from integrations.management.base import PortalCommand
from integrations.permissions import MANAGE_KEYS
from integrations.services.encryption import encryption_keys_rotate


class Command(PortalCommand):
    help = (
        "Re-encrypt every stored secret with the first FIELD_ENCRYPTION_KEYS key. "
        "Afterwards the older keys can be removed."
    )
    required_permission = MANAGE_KEYS

    def handle(self, *args, **options) -> None:
        report = encryption_keys_rotate(
            on_progress=lambda label, done: self.stdout.write(
                f"  {label}: {done} rows", ending="\r"
            )
        )
        for label, count in report.rewritten.items():
            self.stdout.write(f"{label}: {count} rows re-encrypted")
        if report.unreadable:
            for row in report.unreadable:
                self.stderr.write(f"unreadable: {row}")
            raise CommandError(
                f"{len(report.unreadable)} stored secret(s) open with no key in "
                "FIELD_ENCRYPTION_KEYS and were left as they were: put back the key they were "
                "written with and run this again, or re-enter them (API key: its page in the "
                "admin; account tokens: reconnect the account). Keep the old keys "
                "until then."
            )
        self.stdout.write(self.style.SUCCESS("Done: every secret is under the newest key."))

"""What every ccportal command shares: operator-facing failures become one-line errors."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from integrations.crypto import DecryptionError
from integrations.services.quota import QuotaStoreUnavailable


class PortalCommand(BaseCommand):
    """A command whose configuration failures (a stored secret no encryption key opens, the
    quota store unreachable) end in ``CommandError`` with the reason, not a traceback."""

    def execute(self, *args, **options):
        try:
            return super().execute(*args, **options)
        except (DecryptionError, QuotaStoreUnavailable) as exc:
            raise CommandError(str(exc)) from None

"""Check that the portal can work: one line per check, exit status 1 when any fails."""

from __future__ import annotations

import json

from django.core.management.base import CommandError
from django.db import DatabaseError

from integrations.management.base import PortalCommand
from integrations.permissions import VIEW_PORTAL
from integrations.services.doctor import doctor_run


class Command(PortalCommand):
    help = (
        "Check settings, encryption keys, database, cache, quota store, worker, Constant "
        "Contact's endpoints and clock, API keys and accounts; exits 1 when a check fails."
    )
    required_permission = VIEW_PORTAL
    # The settings check runs Django's system checks and reports them as one of its lines.
    requires_system_checks = []

    def add_arguments(self, parser) -> None:
        parser.add_argument("--json", action="store_true", help="a list of {name, ok, detail, fix}")

    def execute(self, *args, **options):
        try:
            return super().execute(*args, **options)
        except DatabaseError as exc:  # only --as-user reads the database before the checks
            raise CommandError(
                f"cannot look up --as-user: the database does not answer ({type(exc).__name__})."
            ) from None

    def handle(self, *args, **options) -> None:
        results = doctor_run()
        if options["json"]:
            self.stdout.write(json.dumps([r.as_dict() for r in results], indent=2))
        else:
            for result in results:
                style = self.style.SUCCESS if result.ok else self.style.ERROR
                self.stdout.write(result.line(), style_func=style)
        failed = sum(not r.ok for r in results)
        if failed:
            raise CommandError(f"{failed} of {len(results)} checks failed.", returncode=1)

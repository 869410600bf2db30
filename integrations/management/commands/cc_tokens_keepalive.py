from __future__ import annotations

from integrations.management.base import PortalCommand
from integrations.permissions import OPERATE_PORTAL
from integrations.services.tokens import tokens_keep_alive


class Command(PortalCommand):
    help = (
        "Refresh accounts whose refresh token has been idle for --idle-days (default 150), "
        "before CC expires it at 180 days."
    )
    required_permission = OPERATE_PORTAL

    def add_arguments(self, parser) -> None:
        parser.add_argument("--idle-days", type=int, default=None)

    def handle(self, *args, **options) -> None:
        outcomes = tokens_keep_alive(idle_days=options["idle_days"])
        if not outcomes:
            self.stdout.write("No idle refresh tokens.")
        for account, outcome in outcomes:
            self.stdout.write(f"{account}: {outcome}")

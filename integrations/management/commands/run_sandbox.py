"""Run the local Constant Contact sandbox (OAuth server, JWKS, v3 API, limits, faults).

    manage.py run_sandbox [--port 8765] [--config FILE] [--host 127.0.0.1]

The first line printed is ``SANDBOX_URL=http://127.0.0.1:<port>`` (``--port 0`` picks a free
port); SIGINT/SIGTERM stop it cleanly. The sandbox itself imports nothing from Django: this
command only wraps ``integrations.sandbox.server.serve``.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations.sandbox.server import build_parser, load_config, serve
from integrations.sandbox.state import SandboxError


class Command(BaseCommand):
    help = "Run the local Constant Contact sandbox; prints the env vars that point ccportal at it."
    # The sandbox needs neither the database nor the portal's checks.
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser: CommandParser) -> None:
        build_parser(parser)

    def handle(self, *args, **options) -> None:
        try:
            config = load_config(options["config"])
            serve(host=options["host"], port=options["port"], config=config, out=self.stdout)
        except SandboxError as error:
            raise CommandError(str(error)) from None
        except OSError as error:
            raise CommandError(
                f"cannot listen on {options['host']}:{options['port']}: {error}"
            ) from None

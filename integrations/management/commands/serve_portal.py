"""Serve the portal for local use: the web server, a task worker and (in sandbox mode) the
local Constant Contact sandbox, supervised together; Ctrl-C stops all of them."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand, CommandError

from integrations import conf


class Command(BaseCommand):
    help = "Run the portal, a db_worker and (sandbox mode) the CC sandbox; prints URL and login."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--sandbox-port", type=int, default=8765)

    def handle(self, *args, **options) -> None:
        manage = [sys.executable, "manage.py"]
        children: list[tuple[str, subprocess.Popen]] = []

        def start(name: str, argv: list[str]) -> None:
            children.append((name, subprocess.Popen(argv)))

        try:
            if conf.cc_mode() == "sandbox":
                from integrations.sandbox.process import sandbox_prepare_for_portal

                start("sandbox", [*manage, "run_sandbox", "--port", str(options["sandbox_port"])])
                sandbox_prepare_for_portal(
                    sandbox_url=f"http://127.0.0.1:{options['sandbox_port']}",
                    portal_url=f"http://127.0.0.1:{options['port']}",
                    stdout=self.stdout,
                )
            from integrations.tasks import periodic_tasks_ensure_scheduled

            periodic_tasks_ensure_scheduled()
            start("worker", [*manage, "db_worker", "--queue-name", "*", "--no-reload"])
            start("web", [*manage, "runserver", "--noreload", f"127.0.0.1:{options['port']}"])
            self.stdout.write(
                self.style.SUCCESS(
                    f"\nccportal is running at http://127.0.0.1:{options['port']}/ "
                    f"({conf.cc_mode()} mode). Log in with the staff login printed above. "
                    "Ctrl-C stops everything.\n"
                )
            )
            while True:
                for name, child in children:
                    if child.poll() is not None:
                        raise CommandError(f"the {name} process exited ({child.returncode}).")
                time.sleep(0.5)
        except KeyboardInterrupt:
            self.stdout.write("\nStopping...")
        finally:
            for _, child in reversed(children):
                if child.poll() is None:
                    child.send_signal(signal.SIGINT)
            for _, child in children:
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()

"""Serve the portal for local use: the web server, a task worker and (in sandbox mode) the
local Constant Contact sandbox, supervised together; Ctrl-C stops all of them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.core.management.base import CommandError

from integrations import conf
from integrations.management.base import PortalCommand
from integrations.services.sandbox_setup import sandbox_prepare_for_portal
from integrations.tasks import periodic_tasks_ensure_scheduled


class Command(PortalCommand):
    help = "Run the portal, a db_worker and (sandbox mode) the CC sandbox; prints URL and login."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--sandbox-port", type=int, default=8765)

    def handle(self, *args, **options) -> None:
        manage = [sys.executable, "manage.py"]
        children: list[tuple[str, subprocess.Popen]] = []
        env = dict(os.environ)
        sandbox_url = f"http://127.0.0.1:{options['sandbox_port']}"
        note = ""
        if conf.cc_mode() == "sandbox" and sandbox_url != conf.cc_sandbox_url():
            # The worker and web server must talk to the sandbox this command starts; other
            # commands run by hand need the same setting.
            env["CC_SANDBOX_URL"] = sandbox_url
            note = f" Other manage.py commands need CC_SANDBOX_URL={sandbox_url} to reach it."

        def start(name: str, argv: list[str]) -> None:
            children.append((name, subprocess.Popen(argv, env=env)))

        def stop_on_term(signum, frame) -> None:
            raise KeyboardInterrupt  # SIGTERM (a service manager, kill) stops like Ctrl-C

        signal.signal(signal.SIGTERM, stop_on_term)
        try:
            if conf.cc_mode() == "sandbox":
                start("sandbox", [*manage, "run_sandbox", "--port", str(options["sandbox_port"])])
                ready = sandbox_prepare_for_portal(
                    sandbox_url=sandbox_url, portal_url=f"http://127.0.0.1:{options['port']}"
                )
                self.stdout.write(ready)
            periodic_tasks_ensure_scheduled()
            start("worker", [*manage, "db_worker", "--queue-name", "*", "--no-reload"])
            start("web", [*manage, "runserver", "--noreload", f"127.0.0.1:{options['port']}"])
            self.stdout.write(
                self.style.SUCCESS(
                    f"\nccportal is running at http://127.0.0.1:{options['port']}/ "
                    f"({conf.cc_mode()} mode). Log in with the staff login printed above. "
                    f"Ctrl-C stops everything.{note}\n"
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
                    # SIGTERM, not SIGINT: a process started in the background ignores SIGINT.
                    # The worker finishes its current task first.
                    child.send_signal(signal.SIGTERM)
            for _, child in children:
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()

"""Serve the portal: the web server, task workers and (in sandbox mode) the local Constant Contact
sandbox, supervised together.

* Default (``make run``): Django's runserver, one ``db_worker`` and the sandbox; any of them
  exiting stops all of them, and Ctrl-C or SIGTERM stops everything.
* ``--production``: gunicorn (``gunicorn.conf.py``) and ``--task-workers`` ``db_worker``
  processes, after ``collectstatic`` when WhiteNoise serves STATIC_ROOT (the production
  profile). The sandbox is
  started only when the settings are in sandbox mode (no live Constant Contact configured). A
  web server or worker that exits is named and restarted after a back-off (1 s, doubling up to
  30 s; back to 1 s once it has run a minute); the sandbox keeps its state in memory, so its
  exit stops everything and the command fails. SIGTERM or SIGINT stops every child with
  SIGTERM, waits gunicorn's graceful timeout plus a few seconds, kills what is left (with its
  own children) and exits 0.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.staticfiles.storage import staticfiles_storage
from django.core.management import call_command
from django.core.management.base import CommandError

from integrations import conf
from integrations.management.base import PortalCommand
from integrations.services.sandbox_setup import sandbox_prepare_for_portal
from integrations.tasks import periodic_tasks_ensure_scheduled

ROOT = Path(__file__).resolve().parents[3]
GUNICORN_CONFIG = ROOT / "gunicorn.conf.py"

#: Restart back-off: the first delay, its ceiling, and how long a child must have run for its
#: next exit to count as new trouble rather than more of the same.
RESTART_FIRST_DELAY = 1.0
RESTART_MAX_DELAY = 30.0
RESTART_RESET_AFTER = 60.0
#: Stopping: how much longer than gunicorn's graceful timeout children get before SIGKILL.
STOP_MARGIN_SECONDS = 5.0


@dataclass
class Child:
    """A supervised process, in its own process group so that Ctrl-C in a terminal reaches
    only the supervisor (which stops the children gracefully) and a kill reaches what the
    child started too (gunicorn's workers)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    restartable: bool = True
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    quick_exits: int = 0
    restart_at: float | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, process_group=0)
        self.started_at = time.monotonic()
        self.restart_at = None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exited(self) -> bool:
        """It has exited and no restart is scheduled yet."""
        return self.restart_at is None and self.process is not None and not self.running()

    def restart_schedule(self) -> float:
        """Schedule the restart after the back-off; returns the delay."""
        if time.monotonic() - self.started_at >= RESTART_RESET_AFTER:
            self.quick_exits = 0
        delay = min(RESTART_FIRST_DELAY * 2**self.quick_exits, RESTART_MAX_DELAY)
        self.quick_exits += 1
        self.restart_at = time.monotonic() + delay
        return delay

    def exit_description(self) -> str:
        code = self.process.returncode
        if code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with status {code}"

    def kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError):  # the whole group is already gone
            os.killpg(self.process.pid, signal.SIGKILL)


def _portal_url(bind: str) -> str:
    """The address a browser on this host uses for gunicorn's ``bind``."""
    if bind.startswith("unix:"):
        return bind
    host, _, port = bind.rpartition(":")
    if host in ("", "0.0.0.0", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


class Command(PortalCommand):
    help = (
        "Run the portal, task workers and (sandbox mode) the CC sandbox; prints the URL. "
        "--production serves with gunicorn and restarts what exits."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--port",
            type=int,
            default=None,
            help="listen on 127.0.0.1:PORT (default 8000; with --production, gunicorn.conf.py's "
            "bind: GUNICORN_BIND, PORT, else 127.0.0.1:8000)",
        )
        parser.add_argument("--sandbox-port", type=int, default=8765)
        parser.add_argument(
            "--production",
            action="store_true",
            help="serve with gunicorn and several task workers, restarting what exits",
        )
        parser.add_argument(
            "--web-workers",
            type=int,
            default=None,
            help="gunicorn worker processes (--production; default GUNICORN_WORKERS, else 2)",
        )
        parser.add_argument(
            "--task-workers",
            type=int,
            default=None,
            help="db_worker processes (--production; default 2)",
        )

    def handle(self, *args, **options) -> None:
        counts = ("web_workers", "task_workers")
        if not options["production"]:
            if any(options[name] is not None for name in counts):
                raise CommandError("--web-workers and --task-workers need --production.")
            self._serve_embedded(port=options["port"] or 8000, sandbox_port=options["sandbox_port"])
            return
        for name in counts:
            if options[name] is not None and options[name] < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be at least 1.")
        self._serve_production(options)

    def _sandbox_environment(self, env: dict[str, str], sandbox_port: int) -> tuple[str, str]:
        """The sandbox's URL, and a note for the banner when other commands need to be told
        where it is; points ``env`` (the children's) at it."""
        sandbox_url = f"http://127.0.0.1:{sandbox_port}"
        if conf.cc_mode() == "sandbox" and sandbox_url != conf.cc_sandbox_url():
            # The worker and web server must talk to the sandbox this command starts; other
            # commands run by hand need the same setting.
            env["CC_SANDBOX_URL"] = sandbox_url
            return sandbox_url, (
                f" Other manage.py commands need CC_SANDBOX_URL={sandbox_url} to reach it."
            )
        return sandbox_url, ""

    def _serve_embedded(self, *, port: int, sandbox_port: int) -> None:
        manage = [sys.executable, "manage.py"]
        children: list[tuple[str, subprocess.Popen]] = []
        env = dict(os.environ)
        sandbox_url, note = self._sandbox_environment(env, sandbox_port)

        def start(name: str, argv: list[str]) -> None:
            children.append((name, subprocess.Popen(argv, env=env)))

        def stop_on_term(signum, frame) -> None:
            raise KeyboardInterrupt  # SIGTERM (a service manager, kill) stops like Ctrl-C

        signal.signal(signal.SIGTERM, stop_on_term)
        try:
            if conf.cc_mode() == "sandbox":
                start("sandbox", [*manage, "run_sandbox", "--port", str(sandbox_port)])
                ready = sandbox_prepare_for_portal(
                    sandbox_url=sandbox_url, portal_url=f"http://127.0.0.1:{port}"
                )
                self.stdout.write(ready)
            periodic_tasks_ensure_scheduled()
            start("worker", [*manage, "db_worker", "--queue-name", "*", "--no-reload"])
            start("web", [*manage, "runserver", "--noreload", f"127.0.0.1:{port}"])
            self.stdout.write(
                self.style.SUCCESS(
                    f"\nccportal is running at http://127.0.0.1:{port}/ "
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

    def _serve_production(self, options: dict[str, Any]) -> None:
        stop_signals: list[int] = []

        def note_stop(signum, frame) -> None:
            # Only noted: the loop stops the children, so a signal never lands halfway
            # through starting one and leaves it unsupervised.
            stop_signals.append(signum)

        signal.signal(signal.SIGTERM, note_stop)
        signal.signal(signal.SIGINT, note_stop)

        env = dict(os.environ)
        sandbox_url, note = self._sandbox_environment(env, options["sandbox_port"])
        # What gunicorn will read (this process has the environment its child gets), with the
        # options on top, passed the way the file reads them.
        gunicorn = runpy.run_path(str(GUNICORN_CONFIG))
        web_env = dict(env)
        web_workers = options["web_workers"] or gunicorn["workers"]
        web_env["GUNICORN_WORKERS"] = str(web_workers)
        bind = f"127.0.0.1:{options['port']}" if options["port"] else gunicorn["bind"]
        web_env["GUNICORN_BIND"] = bind
        portal_url = _portal_url(bind)
        task_workers = options["task_workers"] or 2

        # WhiteNoise's own default: without its finders it serves only what is in STATIC_ROOT.
        if not getattr(settings, "WHITENOISE_USE_FINDERS", settings.DEBUG):
            call_command("collectstatic", interactive=False, verbosity=0)
            self.stdout.write(f"Static files collected into {staticfiles_storage.location}.")

        manage = [sys.executable, "manage.py"]
        children: list[Child] = []
        try:
            if conf.cc_mode() == "sandbox":
                sandbox = Child(
                    "sandbox",
                    [*manage, "run_sandbox", "--port", str(options["sandbox_port"])],
                    env,
                    restartable=False,
                )
                children.append(sandbox)
                sandbox.start()
                self.stdout.write(f"started sandbox: pid {sandbox.process.pid}")
                self.stdout.write(
                    sandbox_prepare_for_portal(sandbox_url=sandbox_url, portal_url=portal_url)
                )
            periodic_tasks_ensure_scheduled()
            for number in range(1, task_workers + 1):
                children.append(
                    Child(
                        f"worker-{number}",
                        [*manage, "db_worker", "--queue-name", "*", "--no-reload"],
                        env,
                    )
                )
            children.append(
                Child(
                    "web",
                    [sys.executable, "-m", "gunicorn", "ccportal.wsgi", "-c", str(GUNICORN_CONFIG)],
                    web_env,
                )
            )
            for child in children:
                if child.process is None and not stop_signals:
                    child.start()
                    self.stdout.write(f"started {child.name}: pid {child.process.pid}")
            if not stop_signals:
                self.stdout.write(
                    self.style.SUCCESS(
                        f"\nccportal is running at {portal_url}/ ({conf.cc_mode()} mode, "
                        f"production): gunicorn with {web_workers} worker(s) x "
                        f"{gunicorn['threads']} threads, {task_workers} task worker(s). "
                        f"SIGTERM or Ctrl-C stops everything.{note}\n"
                    )
                )
                self.stdout.flush()  # a service manager's log reads a pipe
            while not stop_signals:
                self._supervise(children)
                time.sleep(0.5)
            self.stdout.write(f"\n{signal.Signals(stop_signals[0]).name}: stopping...")
        finally:
            self._stop(children, grace=gunicorn["graceful_timeout"] + STOP_MARGIN_SECONDS)

    def _supervise(self, children: list[Child]) -> None:
        """Restart what exited once its back-off has passed; stop on the sandbox's exit."""
        for child in children:
            if child.exited():
                if not child.restartable:
                    raise CommandError(
                        f"the {child.name} process {child.exit_description()}; it keeps its "
                        "state in memory, so everything stops: start serve_portal again."
                    )
                delay = child.restart_schedule()
                self.stderr.write(
                    f"the {child.name} process (pid {child.process.pid}) "
                    f"{child.exit_description()}; restarting it in {delay:.0f} s"
                )
            elif child.restart_at is not None and time.monotonic() >= child.restart_at:
                child.start()
                self.stderr.write(f"restarted {child.name}: pid {child.process.pid}")

    def _stop(self, children: list[Child], *, grace: float) -> None:
        """SIGTERM to every running child (gunicorn lets requests in flight finish, a worker
        its current task), then SIGKILL to the process group of any still running at the
        deadline."""
        for child in reversed(children):
            if child.running():
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in children:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{child.name} did not stop within {grace:.0f} s: killing it")
                child.kill_group()
                child.process.wait()

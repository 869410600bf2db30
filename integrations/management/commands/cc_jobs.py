"""Show list-sync jobs: the same figures as the portal's Jobs pages.

manage.py cc_jobs list [--limit N]
manage.py cc_jobs show JOB_ID
"""

from __future__ import annotations

import datetime as dt

from django.core.management.base import CommandError, CommandParser

from integrations import selectors
from integrations.management.base import PortalCommand
from integrations.models import BulkJob
from integrations.permissions import VIEW_PORTAL
from integrations.services.bulk_jobs import (
    bulk_job_plan_lines,
    bulk_job_progress,
    sync_budget_note,
)


def _when(moment: dt.datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment else "—"


class Command(PortalCommand):
    help = "List sync jobs, or show one with its plan, progress and calls."
    required_permission = VIEW_PORTAL

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        listing = sub.add_parser("list", help="one line per job, newest first")
        listing.add_argument("--limit", type=int, default=50, help="at most this many (50)")
        show = sub.add_parser("show", help="everything about one job")
        show.add_argument("job_id", type=int)

    def handle(self, *args, **options) -> None:
        if options["action"] == "show":
            self._show(options["job_id"])
            return
        jobs = list(selectors.job_list().with_calls_made()[: max(1, options["limit"])])
        if not jobs:
            self.stdout.write("No sync jobs yet. Start one with cc_sync_list or from the portal.")
            return
        self.stdout.write(
            f"{'ID':>5}  {'LIST':<28} {'STATE':<10} {'CALLS':<30} {'FINISHED':<23} TOOK"
        )
        for job in jobs:
            self.stdout.write(
                f"{job.pk:>5}  {(job.list_name or job.list_id)[:28]:<28} "
                f"{job.get_state_display():<10} {job.calls_text:<30} "
                f"{_when(job.finished_at):<23} {job.duration_text or '—'}"
            )

    def _show(self, pk: int) -> None:
        try:
            job = selectors.job_list().with_calls_made().get(pk=pk)
        except BulkJob.DoesNotExist:
            raise CommandError(f"no sync job with id {pk}.") from None
        progress = bulk_job_progress(job)
        timing = progress["elapsed_text"] and (
            f"{progress['elapsed_text']} elapsed, {progress['remaining_text']}"
        )
        rows = [
            ("list", job.list_name or job.list_id),
            ("account", str(job.account)),
            ("mode", job.get_mode_display()),
            ("state", job.get_state_display()),
            ("phase", progress.get("phase_label") or job.phase or "—"),
            ("progress", f"{progress['stage']} {progress['percent']}%"),
            ("calls", job.calls_text),
            ("created", _when(job.created_at)),
            ("run started", _when(job.started_at)),
            ("finished", _when(job.finished_at)),
        ]
        if job.is_finished:
            rows.append(("took", job.duration_text or "—"))
        elif timing:
            rows.append(("time", timing))
        if job.error:
            rows.append(("note", job.error))
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            self.stdout.write(f"{label:<{width}}  {value}")
        if job.has_plan:
            self.stdout.write("plan:")
            for line in bulk_job_plan_lines(job):
                self.stdout.write(f"  {line}")
            self.stdout.write(f"  {job.calls_planned:,} API calls planned.")
            self.stdout.write(f"  {sync_budget_note(job)}")

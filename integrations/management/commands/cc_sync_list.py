"""Make a CC list contain the contacts of a CSV, in a handful of bulk calls.

    manage.py cc_sync_list --account ID --list LIST_ID --csv FILE [--mode replace|add] [--yes]

Plans first (exports the list and diffs it), shows the plan, asks, then runs with a progress
bar. The job runs in this process; if it is interrupted, a portal worker resumes it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import CommandError

from integrations.management.base import PortalCommand
from integrations.models import BulkJob, ConnectedAccount, JobState, SyncMode
from integrations.services import bulk


def _chunks(path: Path):
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            yield chunk


class Command(PortalCommand):
    help = "Sync a CC list's membership to a CSV (plan, confirm, run with progress)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--account", type=int, required=True, help="connected account id")
        parser.add_argument("--list", dest="list_id", required=True, help="CC list id")
        parser.add_argument("--csv", dest="csv_path", required=True, help="desired members")
        parser.add_argument("--mode", choices=SyncMode.values, default=SyncMode.REPLACE)
        parser.add_argument("--yes", action="store_true", help="run the plan without asking")

    def handle(self, *args, **options) -> None:
        path = Path(options["csv_path"])
        if not path.is_file():
            raise CommandError(f"no such file: {path}")
        try:
            account = ConnectedAccount.objects.select_related("api_key").get(pk=options["account"])
        except ConnectedAccount.DoesNotExist:
            raise CommandError(f"no connected account with id {options['account']}.") from None
        try:
            job = bulk.bulk_job_create(
                account=account,
                list_id=options["list_id"],
                mode=options["mode"],
                csv_chunks=_chunks(path),
            )
        except bulk.BulkInputError as exc:
            raise CommandError(f"nothing was sent: {exc}") from None
        summary = job.plan.get("input", {})
        self.stdout.write(
            f"Job {job.pk}: {summary.get('contacts', 0):,} contacts from {path.name} "
            f"({summary.get('duplicates', 0)} duplicates collapsed, {summary.get('rejected', 0)} rows rejected)."
        )
        job = self._drive(job)
        if job.state != JobState.PLANNED:
            raise CommandError(f"planning ended {job.get_state_display().lower()}: {job.error}")
        for line in job.plan.get("summary", []):
            self.stdout.write(f"  {line}")
        if not options["yes"]:
            if not sys.stdin.isatty():
                raise CommandError(
                    f"plan saved as job {job.pk}: run it from the portal's job page, or re-run "
                    "with --yes to run without a prompt."
                )
            try:
                answer = input("Run this plan? [y/N] ")
            except (EOFError, KeyboardInterrupt):
                answer = ""
                self.stdout.write("")
            if answer.strip().lower() not in ("y", "yes"):
                bulk.bulk_job_cancel(job=job)
                self.stdout.write("Not run; the job was cancelled.")
                return
        try:
            job = bulk.bulk_job_approve(job=job)
        except bulk.BulkInputError as exc:
            raise CommandError(f"not run: {exc}") from None
        job = self._drive(job)
        if job.state == JobState.PAUSED:
            label = bulk.bulk_job_progress(job).get("phase_label", "Paused")
            raise CommandError(f"{label}. A portal worker resumes job {job.pk} then.")
        if job.state != JobState.COMPLETED:
            raise CommandError(f"the sync ended {job.get_state_display().lower()}: {job.error}")
        r = job.result
        self.stdout.write(
            self.style.SUCCESS(
                f"Done: {r.get('added', 0):,} added, {r.get('removed', 0):,} removed, {r.get('unchanged', 0):,} unchanged, "
                f"{r.get('not_added_unsubscribed', 0)} not added (unsubscribed), "
                f"{r.get('rejected_input_rows', 0) + r.get('rejected_by_cc', 0)} rejected rows; "
                f"{job.calls_used} API calls."
            )
        )

    def _drive(self, job: BulkJob) -> BulkJob:
        try:
            while True:
                outcome = bulk.bulk_job_advance(
                    job_id=job.pk, on_progress=self._bar, max_inline_wait=3600
                )
                job.refresh_from_db()
                if outcome.run_after is None:
                    break
                if job.state == JobState.PAUSED:
                    break
        except KeyboardInterrupt:
            self.stdout.write(f"\nInterrupted: job {job.pk} continues in the portal's worker.")
            raise SystemExit(130) from None
        self.stdout.write("")
        return job

    def _bar(self, job: BulkJob) -> None:
        progress = bulk.bulk_job_progress(job)
        width = 30
        filled = int(width * progress["percent"] / 100)
        bar = "█" * filled + "·" * (width - filled)
        label = progress.get("phase_label") or job.phase
        cc = (
            f" · CC {progress['cc_state']} {progress.get('cc_percent', 0)}%"
            if progress.get("cc_state")
            else ""
        )
        line = f"\r[{bar}] {progress['percent']:3d}% {label}{cc} · {progress['calls_used']} calls"
        self.stdout.write(line[:160].ljust(160), ending="")
        self.stdout.flush()

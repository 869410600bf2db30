"""Make a CC list contain the contacts of a CSV, in a handful of bulk calls.

    manage.py cc_sync_list --account ID --list LIST_ID --csv FILE [--mode replace|add]
        [--strategy batches|clear-and-reimport] [--allow-removals] [--yes]

Plans first (exports the list and diffs it), shows the plan, asks, then runs with a progress
bar. The job runs in this process; if it is interrupted, a portal worker resumes it. A plan
that removes more than a tenth of the list, or members the file names, runs only with
``--allow-removals``: ``--yes`` alone never runs it. The list is never emptied unless
``--strategy clear-and-reimport`` is asked for and the plan offers it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import CommandError

from integrations import selectors
from integrations.management.base import PortalCommand
from integrations.models import BulkJob, JobState, SyncMode, SyncStrategy
from integrations.permissions import OPERATE_PORTAL
from integrations.services import bulk_jobs, bulk_runner
from integrations.services.bulk_plan import plan_choose
from integrations.services.lists import account_contact_list


def _chunks(path: Path):
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            yield chunk


class Command(PortalCommand):
    help = "Sync a CC list's membership to a CSV (plan, confirm, run with progress)."
    required_permission = OPERATE_PORTAL

    def add_arguments(self, parser) -> None:
        parser.add_argument("--account", type=int, required=True, help="connected account id")
        parser.add_argument("--list", dest="list_id", required=True, help="CC list id")
        parser.add_argument("--csv", dest="csv_path", required=True, help="desired members")
        parser.add_argument("--mode", choices=SyncMode.values, default=SyncMode.REPLACE)
        parser.add_argument(
            "--strategy",
            choices=[value.replace("_", "-") for value in SyncStrategy.values],
            help="how to remove members (default: in batches; the list is never emptied)",
        )
        parser.add_argument(
            "--allow-removals",
            action="store_true",
            help="confirm a plan's removals when it removes many members or ones the file names",
        )
        parser.add_argument("--yes", action="store_true", help="run the plan without asking")

    def handle(self, *args, **options) -> None:
        path = Path(options["csv_path"])
        if not path.is_file():
            raise CommandError(f"no such file: {path}")
        account = selectors.account_get(pk=options["account"])
        if account is None:
            raise CommandError(f"no connected account with id {options['account']}.")
        strategy = (options["strategy"] or "").replace("-", "_") or None
        try:
            job = bulk_jobs.bulk_job_create(
                account=account,
                list_id=options["list_id"],
                mode=options["mode"],
                csv_chunks=_chunks(path),
                user=self.acting_user,
            )
        except bulk_jobs.BulkInputError as exc:
            raise CommandError(f"nothing was sent: {exc}") from None
        # The file is good; now the list (one call, cached for the portal's pages too).
        target = account_contact_list(account=account, list_id=options["list_id"])
        if target is None:
            bulk_jobs.bulk_job_discard(job=job)
            raise CommandError(
                f"{account} has no list {options['list_id']!r}; no job was made. "
                "The account's lists are on its page in the portal."
            )
        job = bulk_jobs.bulk_job_name_list(job=job, list_name=target.get("name", ""))
        summary = job.plan.get("input", {})
        self.stdout.write(
            f"Job {job.pk}: {summary.get('contacts', 0):,} contacts from {path.name} "
            f"({summary.get('duplicates', 0)} duplicates collapsed, {summary.get('rejected', 0)} rows rejected)."
        )
        job = self._drive(job)
        if job.state != JobState.PLANNED:
            raise CommandError(f"planning ended {job.get_state_display().lower()}: {job.error}")
        plan = job.plan
        lines = bulk_jobs.bulk_job_plan_lines(job)
        if strategy and strategy != plan.get("strategy"):
            try:
                plan = plan_choose(plan, strategy)
            except ValueError as exc:
                raise CommandError(f"not run: {exc} The plan is saved as job {job.pk}.") from None
            lines = plan["summary"]
        for line in lines:
            self.stdout.write(f"  {line}")
        self.stdout.write(f"  {job.calls_planned_for(strategy):,} API calls planned.")
        self.stdout.write(f"  {bulk_jobs.sync_budget_note(job)}")
        if plan.get("removals_need_confirmation") and not options["allow_removals"]:
            raise CommandError(
                f"not run: {plan['removal_note']} Re-run with --allow-removals to confirm "
                f"them, or run job {job.pk} from the portal."
            )
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
                bulk_jobs.bulk_job_cancel(job=job)
                self.stdout.write("Not run; the job was cancelled.")
                return
        try:
            job = bulk_jobs.bulk_job_approve(
                job=job, strategy=strategy, allow_removals=options["allow_removals"]
            )
        except bulk_jobs.JobActionRefused as exc:
            raise CommandError(f"not run: {exc} The plan is saved as job {job.pk}.") from None
        job = self._drive(job)
        if job.state == JobState.PAUSED:
            label = bulk_jobs.bulk_job_progress(job).get("phase_label", "Paused")
            raise CommandError(f"{label}. A portal worker resumes job {job.pk} then.")
        if job.state != JobState.COMPLETED:
            raise CommandError(f"the sync ended {job.get_state_display().lower()}: {job.error}")
        r = job.result
        self.stdout.write(
            self.style.SUCCESS(
                f"Done: {r.get('added', 0):,} added, {r.get('removed', 0):,} removed, {r.get('unchanged', 0):,} unchanged, "
                f"{r.get('not_added_unsubscribed', 0)} not added (unsubscribed), "
                f"{r.get('rejected_input_rows', 0) + r.get('rejected_by_cc', 0)} rejected rows; "
                f"{job.calls_text}, took {job.duration_text}."
            )
        )

    def _drive(self, job: BulkJob) -> BulkJob:
        try:
            while True:
                outcome = bulk_runner.bulk_job_advance(
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
        progress = bulk_jobs.bulk_job_progress(job)
        width = 30
        filled = int(width * progress["percent"] / 100)
        bar = "█" * filled + "·" * (width - filled)
        label = progress.get("phase_label") or job.phase
        cc = (
            f" · CC {progress['cc_state']} {progress.get('cc_percent', 0)}%"
            if progress.get("cc_state")
            else ""
        )
        timing = (
            f" · {progress['elapsed_text']}, {progress['remaining_text']}"
            if progress["elapsed_text"]
            else ""
        )
        line = f"\r[{bar}] {progress['percent']:3d}% {label}{cc} · {job.calls_text}{timing}"
        self.stdout.write(line[:160].ljust(160), ending="")
        self.stdout.flush()

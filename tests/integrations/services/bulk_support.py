"""What the bulk sync tests share: a job from a list of emails, and what the sandbox holds."""

from __future__ import annotations

from integrations.models import BulkJob, JobState
from integrations.services import bulk_jobs, bulk_runner

IMPORT_POST = "POST /v3/activities/contacts_json_import"


def csv_body(emails, *, header: str = "email,first_name") -> bytes:
    return (header + "\n" + "".join(f"{e},Name {i}\n" for i, e in enumerate(emails))).encode()


def emails(start: int, stop: int) -> list[str]:
    return [f"m{n}@example.com" for n in range(start, stop)]


def seed_members(app, start: int, stop: int) -> None:
    app.sandbox.seed_contacts(
        app.cc_account,
        count=stop - start,
        start=start,
        list_ids=[app.list_id],
        email_template="m{n}@example.com",
    )


def members(app) -> set[str]:
    return {m.email for m in app.sandbox.list_members(app.cc_account, app.list_id)}


def stats(app):
    return app.sandbox.stats(app.api_key.client_id)


def import_posts(app) -> int:
    return sum(stats(app).by_path.get(IMPORT_POST, {}).values())


def job_get(pk: int) -> BulkJob:
    return BulkJob.objects.get(pk=pk)


def state_is(pk: int, *states: str):
    return lambda: job_get(pk).state in states


def create_job(app, emails, *, mode: str = "replace", body: bytes | None = None) -> BulkJob:
    return bulk_jobs.bulk_job_create(
        account=app.account,
        list_id=app.list_id,
        mode=mode,
        csv_chunks=iter([body if body is not None else csv_body(emails)]),
    )


def drive_inline(job: BulkJob, *, approve: bool = True) -> BulkJob:
    """Run a job in this process, as the CLI does."""
    bulk_runner.bulk_job_advance(job_id=job.pk, max_inline_wait=60)
    job.refresh_from_db()
    if approve and job.state == JobState.PLANNED:
        bulk_jobs.bulk_job_approve(allow_removals=True, job=job)
        bulk_runner.bulk_job_advance(job_id=job.pk, max_inline_wait=60)
        job.refresh_from_db()
    return job

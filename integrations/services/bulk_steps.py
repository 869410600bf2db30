"""The steps of a list sync, one function per :class:`~integrations.models.JobPhase`.

Each step is called by the :class:`~.bulk_runner.JobRunner` holding the job's lease, does one
thing at CC (or none), and ends in a recovery point (``run.save`` / ``run.goto``): an activity
id is stored the moment CC returns it, so a restarted job continues after the last accepted
activity. The runner decides what an error means; a step only takes its step.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from integrations import conf
from integrations.constant_contact.client import Activity
from integrations.constant_contact.limits import ACTIVITIES_PAGE_MAX, ACTIVITY_CONTACT_IDS_MAX
from integrations.errors import PortalError
from integrations.models import ApiCall, JobPhase, JobState, SyncStrategy
from integrations.services.bulk_csv import (
    RejectedRow,
    current_from_export_csv,
    desired_csv_from_export,
    desired_from_csv,
)
from integrations.services.bulk_jobs import clear_budget_check, input_summary, job_finish
from integrations.services.bulk_plan import chunk_sizes, import_chunks, membership_diff, sync_plan
from integrations.services.quota import quota_account_remaining

if TYPE_CHECKING:
    from integrations.services.bulk_runner import JobRunner

#: Activity end states in which CC applied nothing: the step sends the activity again.
ACTIVITY_ENDS_TO_RETRY = frozenset({"failed", "timed_out", "cancelled"})
#: Tries of one activity before the job pauses and asks a person to look.
ACTIVITY_ATTEMPTS = 3
#: How far apart our clock and CC's may be when matching an activity to an intent.
INTENT_CLOCK_SLACK = 120.0


class ActivityKeptFailing(PortalError):
    """CC ended the same activity badly every time it was sent; the job pauses."""


_IMPORT_INDEX = re.compile(r"import_data\[(\d+)\]")
EXPORT_FIELDS = ["email_address", "first_name", "last_name"]


# --- planning steps ---
def export_start(run: JobRunner) -> None:
    answer = run.client.contact_export_create(list_ids=[run.job.list_id], fields=EXPORT_FIELDS)
    run.checkpoint["export"] = run.record_activity("export", answer)
    run.schedule_first_poll()
    run.goto(
        JobPhase.EXPORT_WAIT,
        phase_label="Exporting the list's current members",
        activities_total=1,
        activities_done=0,
    )


def export_wait(run: JobRunner) -> None:
    export = [run.checkpoint["export"]]
    done = run.poll(export, "Exporting the list's current members")
    if done and not _retried(run, export, "the export", JobPhase.EXPORT_START):
        run.goto(JobPhase.EXPORT_DOWNLOAD)


def export_download(run: JobRunner) -> None:
    _download(run, run.checkpoint["export"], run.files.export)
    run.goto(
        JobPhase.SOURCE_EXPORT_START if run.job.source_list_id else JobPhase.DIFF,
        phase_label="Downloaded the current members",
    )


def _download(run: JobRunner, activity: dict[str, Any], path: Path) -> None:
    file_id = activity.get("file_id") or activity["id"]
    run.files.write_text(path, run.client.contact_export_download(file_id))


def source_export_start(run: JobRunner) -> None:
    answer = run.client.contact_export_create(
        list_ids=[run.job.source_list_id], fields=EXPORT_FIELDS
    )
    run.checkpoint["source_export"] = run.record_activity("export", answer)
    run.schedule_first_poll()
    run.goto(
        JobPhase.SOURCE_EXPORT_WAIT,
        phase_label="Exporting the source list",
        activities_total=1,
        activities_done=0,
    )


def source_export_wait(run: JobRunner) -> None:
    if run.poll([run.checkpoint["source_export"]], "Exporting the source list"):
        export = [run.checkpoint["source_export"]]
        if not _retried(run, export, "the source list's export", JobPhase.SOURCE_EXPORT_START):
            run.goto(JobPhase.SOURCE_EXPORT_DOWNLOAD)


def source_export_download(run: JobRunner) -> None:
    _download(run, run.checkpoint["source_export"], run.files.source_export)
    desired_csv_from_export(run.files.source_export, run.files.desired)
    desired = desired_from_csv(run.files.desired)
    # Rows of the source list the import would refuse go to the rejected-rows download.
    run.files.write_rejected("file", desired.rejected)
    run.job.plan = {**run.job.plan, "input": input_summary(desired)}
    run.save(plan=run.job.plan)
    run.goto(JobPhase.DIFF)


def diff(run: JobRunner) -> None:
    desired = run.desired_set()
    with run.files.export.open(encoding="utf-8", newline="") as handle:
        current = current_from_export_csv(handle)
    # Members whose row was rejected only for a field stay: a replace must not remove them.
    change = membership_diff(
        desired.contacts.keys(), current, mode=run.job.mode, keep=desired.rejected_valid_emails
    )
    run.files.write_diff(adds=change.adds, removes=change.removes, by_id=change.removes_by_id)
    add_sizes = chunk_sizes(desired.contacts, change.adds)
    all_sizes = chunk_sizes(desired.contacts, sorted(desired.contacts))
    # Jobs run in the background lane: its budget, not the whole key's, is what they get, and
    # no more than the account's own cap leaves.
    budget = quota_account_remaining(account=run.job.account)
    plan = sync_plan(
        diff=change,
        desired_count=len(desired.contacts),
        current_count=len(current),
        chunk_sizes_adds=add_sizes,
        chunk_sizes_all=all_sizes,
        remaining_today=budget["remaining"],
        per_day=budget["per_day"],
        mentioned=desired.mentioned_emails,
        confirm_share=conf.sync_removal_confirm_share(),
    )
    used = ApiCall.objects.filter(bulk_job=run.job).count()
    clearing = plan.strategy == SyncStrategy.CLEAR_AND_REIMPORT
    plan_dict = {
        **run.job.plan,
        **plan.as_dict(),
        "planning_calls": used,
        "planned_at": timezone.now().isoformat(),
        # Where each import chunk starts, so a step builds only its own chunk.
        "chunk_sizes": all_sizes if clearing else add_sizes,
        "chunk_sizes_by_strategy": {
            SyncStrategy.BATCHES: add_sizes,
            SyncStrategy.CLEAR_AND_REIMPORT: all_sizes,
        },
    }
    run.save(
        plan=plan_dict,
        # The plan's total counts the export; the export is done, so count it as it went.
        calls_planned=used + plan.calls_after_export,
        state=JobState.PLANNED,
        phase=JobPhase.AWAITING_APPROVAL,
        progress=run.progress(
            phase_label="Plan ready: review and run", activities_total=0, activities_done=0
        ),
    )


# --- running steps ---
def _import_emails(run: JobRunner) -> list[str]:
    if run.clearing:
        return sorted(run.desired_set().contacts)
    return run.files.read_diff()["adds"]


def _chunk(run: JobRunner, index: int) -> list[dict[str, Any]]:
    """Import chunk ``index``: chunking is greedy, so the chunk that starts where the plan
    says is built alone, exactly as when the whole sequence was chunked."""
    contacts = run.desired_set().contacts
    emails = _import_emails(run)
    sizes = run.job.plan["chunk_sizes"]
    start = sum(sizes[:index])
    (chunk,) = import_chunks(contacts, emails[start : start + sizes[index]])
    return chunk


def clear_start(run: JobRunner) -> None:
    # Never empty a list that today's budget cannot fill again (raises ClearNotCovered).
    clear_budget_check(job=run.job, plan=run.job.plan)
    # Emptying the list must finish before any import adds people back: CC runs queued
    # activities in no particular order.
    answer = _submit_once(
        run,
        intent={"kind": "clear", "items": None},
        send=lambda: run.client.list_memberships_remove(
            source_list_ids=[run.job.list_id], list_ids=[run.job.list_id]
        ),
    )
    run.checkpoint["clear"] = run.record_activity("clear", answer)
    run.schedule_first_poll()
    run.goto(
        JobPhase.CLEAR_WAIT,
        phase_label="Emptying the list before re-importing it",
        activities_total=1 + run.job.plan.get("import_calls", 0),
        activities_done=0,
    )


def clear_wait(run: JobRunner) -> None:
    clear = [run.checkpoint["clear"]]
    done = run.poll(clear, "Emptying the list before re-importing it")
    if done and not _retried(run, clear, "emptying the list", JobPhase.CLEAR_START):
        run.goto(JobPhase.SUBMIT)


def submit(run: JobRunner) -> None:
    """Submit the next import chunk or removal batch CC does not have yet; each activity id is
    stored as soon as CC returns it, so a restart resumes after the last accepted one, and a
    removal CC accepted before a crash is found in CC's activity list, not sent again."""
    activities = run.checkpoint.setdefault("activities", [])
    import_total = run.job.plan.get("import_calls", 0)
    removes = [] if run.clearing else run.files.read_diff()["removes"]
    removal_total = -(-len(removes) // ACTIVITY_CONTACT_IDS_MAX)
    total = import_total + removal_total + int(run.clearing)
    have_chunks = {a["chunk"] for a in activities if a["kind"] == "import"}
    have_batches = {a["batch"] for a in activities if a["kind"] == "remove"}
    chunk_index = next((i for i in range(import_total) if i not in have_chunks), None)
    batch_index = next((i for i in range(removal_total) if i not in have_batches), None)
    if chunk_index is not None:
        chunk = _chunk(run, chunk_index)
        answer = _submit_once(
            run,
            intent={"kind": "import", "items": len(chunk), "chunk": chunk_index},
            send=lambda: run.client.contacts_json_import(
                contacts=chunk, list_ids=[run.job.list_id]
            ),
        )
        activities.append(
            run.record_activity("import", answer, chunk=chunk_index, items=len(chunk))
        )
        run.save(
            progress=run.progress(
                phase_label=f"Importing chunk {chunk_index + 1} of {import_total}",
                chunk=chunk_index + 1,
                chunks=import_total,
                activities_total=total,
                activities_done=0,
            )
        )
        return
    if batch_index is not None:
        first = batch_index * ACTIVITY_CONTACT_IDS_MAX
        batch = removes[first : first + ACTIVITY_CONTACT_IDS_MAX]
        answer = _submit_once(
            run,
            intent={"kind": "remove", "items": len(batch), "batch": batch_index},
            send=lambda: run.client.list_memberships_remove(
                contact_ids=batch, list_ids=[run.job.list_id]
            ),
        )
        activities.append(
            run.record_activity("remove", answer, batch=batch_index, items=len(batch))
        )
        label = f"Removing batch {batch_index + 1} of {removal_total}"
        run.save(progress=run.progress(phase_label=label, activities_total=total))
        return
    run.schedule_first_poll()
    run.goto(JobPhase.WAIT_ALL, phase_label="Waiting for CC to finish", activities_total=total)


def wait_all(run: JobRunner) -> None:
    activities = run.checkpoint.get("activities", [])
    done = run.poll(activities, "Waiting for CC to finish")
    # Those CC did not finish are submitted again; the others stand.
    if done and not _retried(run, activities, "an import or a removal", JobPhase.SUBMIT):
        run.goto(JobPhase.FINISH)


def _retried(run: JobRunner, activities: list[dict[str, Any]], what: str, again: JobPhase) -> bool:
    """When CC ended any of ``activities`` ``failed``, ``timed_out`` or ``cancelled`` (it
    applied none of them), take those out and go back to ``again``, whose step sends them
    anew; say whether it did. After ``ACTIVITY_ATTEMPTS`` tries of the same activity the job
    also pauses (``ActivityKeptFailing``), at ``again``, for a person to look and resume."""
    failed = [a for a in activities if a.get("state") in ACTIVITY_ENDS_TO_RETRY]
    if not failed:
        return False
    history = run.checkpoint.setdefault("ended_badly", [])
    attempts = run.checkpoint.setdefault("attempts", {})
    exhausted = ""
    for activity in failed:
        history.append({k: activity.get(k) for k in ("id", "kind", "state", "chunk", "batch")})
        activities.remove(activity)
        key = f"{activity['kind']}:{activity.get('chunk', activity.get('batch', ''))}"
        attempts[key] = attempts.get(key, 0) + 1
        if attempts[key] >= ACTIVITY_ATTEMPTS:
            attempts[key] = 0
            exhausted = (
                f"CC ended {what} {activity['state'].replace('_', ' ')} "
                f"{ACTIVITY_ATTEMPTS} times in a row"
            )
    state = failed[0]["state"].replace("_", " ")
    run.goto(again, phase_label=f"CC ended {what} {state}; sending it again")
    if exhausted:
        raise ActivityKeptFailing(exhausted)
    return True


def _submit_once(run: JobRunner, *, intent: dict[str, Any], send: Callable[[], Activity]):
    """Send an import chunk or a removal at most once. The intent is written before the call;
    should the answer be lost after CC accepted it (a read timeout, a dropped connection, a
    5xx from CC's gateway) or the worker die before its id was stored, the next try finds the
    activity CC created (one of the same kind and size, created after the intent, that the
    job does not know yet) in CC's activity list and adopts it instead of sending again."""
    pending = run.checkpoint.get("intent")
    if pending and all(pending.get(k) == v for k, v in intent.items()):
        known = {a["id"] for a in run.checkpoint.get("activities", [])}
        known |= {run.checkpoint[k]["id"] for k in ("clear",) if k in run.checkpoint}
        # An attempt CC ended badly was taken out of the job's activities; it is not the one.
        known |= {a["id"] for a in run.checkpoint.get("ended_badly", [])}
        for candidate in run.client.activities(limit=ACTIVITIES_PAGE_MAX):
            if (
                candidate.activity_id not in known
                and candidate.created_at >= pending["at"] - INTENT_CLOCK_SLACK
                and _is_kind(candidate, intent["kind"])
                and (
                    intent["items"] is None
                    or candidate.status.get("items_total_count") == intent["items"]
                )
            ):
                run.checkpoint.pop("intent", None)
                return candidate
    run.checkpoint["intent"] = {**intent, "at": time.time()}
    run.save()
    answer = send()
    run.checkpoint.pop("intent", None)
    return answer


def _is_kind(activity: Activity, kind: str) -> bool:
    """Whether CC's status of ``activity`` has the shape of ``kind``'s: a membership change
    counts target lists (``ActivityListsMembership``), an import counts people
    (``ActivityImport``)."""
    if kind == "import":
        return "person_count" in activity.status
    return "list_count" in activity.status


def _cc_rejected_rows(run: JobRunner, imports: list[dict[str, Any]]) -> list[RejectedRow]:
    """CC's per-row import errors, with the email of the row when the error names its
    index in the chunk (``import_data[3]: ...``)."""
    rows: list[RejectedRow] = []
    for activity in (a for a in imports if a.get("errors")):
        chunk = _chunk(run, int(activity.get("chunk", 0)))
        for text in activity["errors"]:
            match = _IMPORT_INDEX.search(text)
            index = int(match.group(1)) if match else -1
            email = str(chunk[index]["email"]) if 0 <= index < len(chunk) else ""
            rows.append(RejectedRow(line=0, email=email, reason=text))
    return rows


def finish(run: JobRunner) -> None:
    plan = run.job.plan
    activities = run.checkpoint.get("activities", [])
    imports = [a for a in activities if a["kind"] == "import"]
    cannot_add = sum(
        int((a.get("status") or {}).get("cannot_add_to_list_count", 0)) for a in imports
    )
    cc_errors = sum(int((a.get("status") or {}).get("error_count", 0)) for a in imports)
    failed = [a for a in activities if a.get("state") != "completed"]
    run.files.write_rejected("cc", _cc_rejected_rows(run, imports))
    adds = plan.get("adds", 0)
    result = {
        "added": max(0, adds - cannot_add - cc_errors),
        "removed": plan.get("removes", 0),
        "unchanged": plan.get("unchanged", 0),
        "not_added_unsubscribed": cannot_add,
        "rejected_input_rows": (plan.get("input") or {}).get("rejected", 0),
        "rejected_by_cc": cc_errors,
        "failed_activities": len(failed),
    }
    state = JobState.COMPLETED if not failed else JobState.FAILED
    error = (
        ""
        if not failed
        else f"{len(failed)} CC activit{'y' if len(failed) == 1 else 'ies'} did not complete."
    )
    run.save(
        **job_finish(state, error=error),
        result=result,
        progress=run.progress(
            phase_label="Done" if not failed else "Finished with failures",
            activities_done=len(activities),
            cc_percent=100,
        ),
    )


#: What each phase does; phases without a step (awaiting approval, done) stop the runner.
STEPS: dict[str, Callable[[JobRunner], None]] = {
    JobPhase.EXPORT_START: export_start,
    JobPhase.EXPORT_WAIT: export_wait,
    JobPhase.EXPORT_DOWNLOAD: export_download,
    JobPhase.SOURCE_EXPORT_START: source_export_start,
    JobPhase.SOURCE_EXPORT_WAIT: source_export_wait,
    JobPhase.SOURCE_EXPORT_DOWNLOAD: source_export_download,
    JobPhase.DIFF: diff,
    JobPhase.CLEAR_START: clear_start,
    JobPhase.CLEAR_WAIT: clear_wait,
    JobPhase.SUBMIT: submit,
    JobPhase.WAIT_ALL: wait_all,
    JobPhase.FINISH: finish,
}

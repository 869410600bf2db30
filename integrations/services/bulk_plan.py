"""Planning a list sync: what must change (the diff), how the additions are cut into import
calls, and which strategy removes members for the fewest calls.

Pure functions, no HTTP and no models. Chunks are measured with the serialiser the client
sends (:func:`~integrations.constant_contact.client.json_import_body`), so a chunk planned to
fit CC's 4 MB is the body that goes out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from integrations.constant_contact.client import compact_json
from integrations.constant_contact.limits import (
    ACTIVITIES_PAGE_MAX,
    ACTIVITY_CONTACT_IDS_MAX,
    IMPORT_INTEGER_FIELDS,
    IMPORT_MAX_BYTES,
    IMPORT_MAX_CONTACTS,
)
from integrations.models import SyncMode, SyncStrategy
from integrations.models.jobs import plan_calls_planned


@dataclass(frozen=True)
class MembershipDiff:
    """What must change for the list to hold exactly the desired set.

    ``removes`` holds contact ids when ``removes_by_id`` (every member to remove had one in the
    export), otherwise emails; ``remove_emails`` always holds the emails, in the same order.
    """

    mode: str
    adds: list[str]
    removes: list[str]
    unchanged: int
    removes_by_id: bool = True
    remove_emails: list[str] = field(default_factory=list)
    # Current members outside the desired set left in place because they were in ``keep``.
    kept: int = 0


# --- Diff --------------------------------------------------------------------------------------


def membership_diff(
    desired: Iterable[str],
    current: Mapping[str, str],
    *,
    mode: str,
    keep: Iterable[str] = (),
) -> MembershipDiff:
    """Set-wise difference between the desired emails and the list's current members.

    ``adds`` is sorted; ``removes`` follows the sorted emails of the members to remove. In mode
    "add" nothing is removed. In mode "replace" members outside ``desired`` are removed unless
    they are in ``keep`` (e.g. ``DesiredSet.rejected_valid_emails``). Emails are compared trimmed
    and lower-cased. Only membership is compared: unchanged members are not re-imported, so
    their CC fields stay as they are.
    """
    if mode not in SyncMode.values:
        raise ValueError(f"mode must be one of {', '.join(SyncMode.values)}, not {mode!r}.")
    wanted = {email.strip().lower() for email in desired}
    adds = sorted(wanted.difference(current))
    unchanged = len(wanted) - len(adds)
    if mode == SyncMode.ADD:
        return MembershipDiff(mode=mode, adds=adds, removes=[], unchanged=unchanged)
    protected = {email.strip().lower() for email in keep}
    outside = sorted(email for email in current if email not in wanted)
    remove_emails = [email for email in outside if email not in protected]
    ids = [current[email] for email in remove_emails]
    by_id = all(ids)
    return MembershipDiff(
        mode=mode,
        adds=adds,
        removes=ids if by_id else list(remove_emails),
        unchanged=unchanged,
        removes_by_id=by_id,
        remove_emails=remove_emails,
        kept=len(outside) - len(remove_emails),
    )


# --- Import payloads -----------------------------------------------------------------------------

_PLACEHOLDER_LIST_IDS = ("00000000-0000-0000-0000-000000000000",)  # one 36-character UUID


def _import_item(email: str, fields: Mapping[str, str]) -> dict[str, object]:
    item: dict[str, object] = {"email": email}
    for key, value in fields.items():
        # JsonImportContact types the birthday month and day as integers.
        item[key] = int(value) if key in IMPORT_INTEGER_FIELDS else value
    return item


def import_chunks(
    contacts: Mapping[str, Mapping[str, str]],
    emails: Iterable[str],
    *,
    max_contacts: int = IMPORT_MAX_CONTACTS,
    max_bytes: int = IMPORT_MAX_BYTES,
    list_ids: Sequence[str] = _PLACEHOLDER_LIST_IDS,
) -> Iterator[list[dict]]:
    """Yield ``import_data`` lists for ``emails``, in order, each item ``{"email", **fields}``.

    Guarantees: every chunk has 1..``max_contacts`` items, and ``json_import_body(chunk,
    list_ids)`` is strictly shorter than ``max_bytes`` (by default the payload is measured with
    one 36-character list id). Sizes are added item by item; no chunk is serialised twice.
    Emails missing from ``contacts`` are imported with the email only; birthday month/day are
    sent as integers. A single contact that cannot fit at all raises ``ValueError``.
    """
    if max_contacts < 1:
        raise ValueError("max_contacts must be at least 1.")
    overhead = len(compact_json({"import_data": [], "list_ids": list(list_ids)}))
    chunk: list[dict] = []
    size = overhead
    for email in emails:
        item = _import_item(email, contacts.get(email, {}))
        item_size = len(compact_json(item))
        added = item_size + 1 if chunk else item_size  # the comma before every item but the first
        if chunk and (len(chunk) >= max_contacts or size + added >= max_bytes):
            yield chunk
            chunk, size, added = [], overhead, item_size
        if size + added >= max_bytes:
            raise ValueError(
                f"the contact {email!r} alone makes a {size + added:,}-byte payload; "
                f"the limit is {max_bytes:,}."
            )
        chunk.append(item)
        size += added
    if chunk:
        yield chunk


def chunk_sizes(
    contacts: Mapping[str, Mapping[str, str]],
    emails: Iterable[str],
    *,
    max_contacts: int = IMPORT_MAX_CONTACTS,
    max_bytes: int = IMPORT_MAX_BYTES,
    list_ids: Sequence[str] = _PLACEHOLDER_LIST_IDS,
) -> list[int]:
    """The item counts ``import_chunks`` would yield, holding one chunk at a time."""
    chunks = import_chunks(
        contacts, emails, max_contacts=max_contacts, max_bytes=max_bytes, list_ids=list_ids
    )
    return [len(chunk) for chunk in chunks]


# --- Plan ------------------------------------------------------------------------------------

EXPORT_CALLS = 2  # POST /v3/activities/contact_exports + GET /v3/contact_exports/{id}
# Activities are polled with GET /v3/activities?limit=500, which reports every activity of the
# account in one page, so a wave of parallel activities costs ~2 polls per page of 500, not 2
# per activity. Jobs take 30 s to 15+ min
# (https://developer.constantcontact.com/api_guide/activity_status.html).
POLLS_PER_WAVE = 2

RESET_HINT = "after the 00:00 UTC reset"


def _wave_polls(activities: int) -> int:
    return POLLS_PER_WAVE * math.ceil(activities / ACTIVITIES_PAGE_MAX) if activities else 0


#: Clearing and re-importing is offered only where it saves real budget: when removing in
#: batches would take at least this many calls.
CLEAR_OFFER_MIN_REMOVAL_CALLS = 20
#: CC runs a bulk activity in 30 s to 15+ minutes; the list is incomplete from the clear until
#: the last re-import lands.
ACTIVITY_SECONDS_RANGE = (30, 15 * 60)


@dataclass(frozen=True)
class StrategyCost:
    """What one way of running the sync costs, and whether today's budget covers it."""

    strategy: str
    import_calls: int
    removal_calls: int
    expected_polls: int
    total_calls: int
    calls_after_export: int
    fits_today: bool
    days_needed: int
    earliest_fit: str | None


def _cost(
    strategy: str,
    import_calls: int,
    removal_calls: int,
    polls: int,
    *,
    remaining_today: int,
    per_day: int,
) -> StrategyCost:
    total = EXPORT_CALLS + import_calls + removal_calls + polls
    fits_today = total <= remaining_today
    days_needed = max(1, math.ceil(total / per_day))
    if fits_today:
        earliest_fit = None
    elif days_needed == 1:
        earliest_fit = RESET_HINT
    else:
        earliest_fit = f"spread over {days_needed} days"
    return StrategyCost(
        strategy=strategy,
        import_calls=import_calls,
        removal_calls=removal_calls,
        expected_polls=polls,
        total_calls=total,
        calls_after_export=total - EXPORT_CALLS - _wave_polls(1),
        fits_today=fits_today,
        days_needed=days_needed,
        earliest_fit=earliest_fit,
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class SyncPlan:
    """How a sync will run, what each way costs in API calls, and what needs a person's word.

    The top-level cost fields (``import_calls`` ... ``earliest_fit``) are those of
    ``strategy``, the way the job runs unless the person chooses another of ``options``.
    ``total_calls`` covers the whole job including the export; ``calls_after_export`` is what
    is still needed once the export has been downloaded.
    """

    adds: int
    removes: int
    unchanged: int
    current_members: int
    strategy: str
    reason: str
    import_calls: int
    removal_calls: int
    export_calls: int
    expected_polls: int
    total_calls: int
    calls_after_export: int
    single_call_equivalent: int
    remaining_today: int
    per_day: int
    fits_today: bool
    days_needed: int
    earliest_fit: str | None
    options: dict[str, dict[str, object]]
    clear_offered: bool
    clear_note: str
    removal_share: float
    removal_mentioned: list[str]
    removals_need_confirmation: bool
    removal_note: str

    def as_dict(self) -> dict[str, object]:
        """Every field plus ``summary``; only JSON types."""
        return {**asdict(self), "summary": self.summary()}

    def summary(self) -> list[str]:
        return plan_summary(asdict(self))

    def total_for(self, strategy: str) -> int | None:
        """The whole job's calls with ``strategy``, None when it cannot be used."""
        option = self.options.get(strategy)
        return int(option["total_calls"]) if option else None


def plan_summary(plan: dict) -> list[str]:
    """Human-readable lines for the UI and the CLI, for the plan's current strategy."""
    lines = [
        f"Add {plan['adds']:,}, remove {plan['removes']:,}, leave {plan['unchanged']:,} unchanged."
    ]
    if plan["strategy"] == SyncStrategy.CLEAR_AND_REIMPORT:
        lines.append(
            f"Strategy: empty the list in 1 call, then re-import the whole desired set in "
            f"{plan['import_calls']:,} import call(s) — {plan['reason']}."
        )
        lines.append(plan["clear_note"])
    else:
        lines.append(
            f"Strategy: {plan['import_calls']:,} import call(s), then {plan['removal_calls']:,} "
            f"removal call(s) of up to {ACTIVITY_CONTACT_IDS_MAX} contacts — {plan['reason']}."
            + ("" if "never emptied" in plan["reason"] else " The list is never emptied.")
        )
        if plan["clear_offered"]:
            lines.append(plan["clear_note"])
    lines.append(_calls_line(plan))
    budget = f"today's remaining budget for background jobs, {plan['remaining_today']:,} calls"
    if plan["fits_today"]:
        lines.append(f"Fits {budget}.")
    else:
        lines.append(f"Does not fit {budget}; runs {plan['earliest_fit']}.")
    if plan["removals_need_confirmation"]:
        lines.append(plan["removal_note"])
    return lines


def _calls_line(plan: dict) -> str:
    """Where the plan's call figure comes from, ending in the figure the job's pages show.

    Before the export (a plan being made), the export is estimated like the rest; after it
    (``planning_calls`` known), the calls it took are counted as they went, so the total is
    :func:`~integrations.models.jobs.plan_calls_planned`, the job's ``calls_planned``."""
    if "planning_calls" in plan:
        first = f"{int(plan['planning_calls']):,} made planning (the export and its status polls)"
        polls = int(plan["calls_after_export"]) - plan["import_calls"] - plan["removal_calls"]
        total = f"{plan_calls_planned(plan):,} planned"
    else:
        first = f"{plan['export_calls']} export"
        polls = plan["expected_polls"]
        total = f"{plan_calls_planned(plan):,}"
    return (
        f"API calls: {first} + {plan['import_calls']:,} import + {plan['removal_calls']:,} "
        f"removal + ~{polls:,} status polls = {total} (one call per contact would take "
        f"{plan['single_call_equivalent']:,})."
    )


def plan_choose(plan: dict, strategy: str) -> dict:
    """The plan as it runs with ``strategy`` (one of its ``options``), summary included."""
    if strategy not in plan.get("options", {}):
        offered = ", ".join(sorted(plan.get("options", {}))) or "none"
        raise ValueError(f"this plan cannot run with {strategy!r}; it offers {offered}.")
    if strategy == SyncStrategy.CLEAR_AND_REIMPORT and not plan.get("clear_offered"):
        raise ValueError("clearing and re-importing is not offered for this plan.")
    chosen = {**plan, **plan["options"][strategy], "strategy": strategy}
    if "chunk_sizes_by_strategy" in plan:
        chosen["chunk_sizes"] = plan["chunk_sizes_by_strategy"][strategy]
    if strategy != plan["strategy"]:
        chosen["reason"] = "chosen on the plan page"
    chosen["summary"] = plan_summary(chosen)
    return chosen


def sync_plan(
    *,
    diff: MembershipDiff,
    desired_count: int,
    current_count: int,
    chunk_sizes_adds: list[int],
    chunk_sizes_all: list[int],
    remaining_today: int,
    per_day: int,
    mentioned: Iterable[str] = (),
    confirm_share: float = 0.10,
) -> SyncPlan:
    """Count what each way of removing members costs, and what needs confirming.

    - "batches" (the default): import the adds, remove members in ``ceil(removes / 500)``
      calls of contact ids; the list is never emptied, so at no moment does it hold fewer
      of the right people than before.
    - "clear_and_reimport": one ``remove_list_memberships`` with ``source.list_ids=[L]``, wait
      for it, then import the whole desired set. It is offered only where it saves real
      budget (removals of at least ``CLEAR_OFFER_MIN_REMOVAL_CALLS`` batches) and costs less;
      the person must choose it. It is the only way when the export had no contact ids.

    Removals need a person's explicit word when they take more than ``confirm_share`` of the
    list's ``current_count`` members, or when a member to remove is ``mentioned`` in the file
    (a row naming them was refused). ``remaining_today`` and ``per_day`` are the budget of the
    lane the job runs in.
    """
    if per_day < 1:
        raise ValueError("per_day must be at least 1.")
    adds, removes = len(diff.adds), len(diff.removes)
    if sum(chunk_sizes_adds) != adds:
        raise ValueError(f"chunk_sizes_adds sum to {sum(chunk_sizes_adds):,}, not {adds:,} adds.")
    if sum(chunk_sizes_all) != desired_count:
        raise ValueError(
            f"chunk_sizes_all sum to {sum(chunk_sizes_all):,}, not {desired_count:,} contacts."
        )
    if removes and diff.mode != SyncMode.REPLACE:
        raise ValueError(f"a diff in mode {diff.mode!r} cannot remove members.")
    export_polls = _wave_polls(1)
    budget = {"remaining_today": remaining_today, "per_day": per_day}

    options: dict[str, StrategyCost] = {}
    if diff.removes_by_id or not removes:
        removal_calls = math.ceil(removes / ACTIVITY_CONTACT_IDS_MAX)
        import_calls = len(chunk_sizes_adds)
        polls = export_polls + _wave_polls(import_calls + removal_calls)
        options[SyncStrategy.BATCHES] = _cost(
            SyncStrategy.BATCHES, import_calls, removal_calls, polls, **budget
        )
    if removes:
        import_calls = len(chunk_sizes_all)
        polls = export_polls + _wave_polls(1) + _wave_polls(import_calls)
        options[SyncStrategy.CLEAR_AND_REIMPORT] = _cost(
            SyncStrategy.CLEAR_AND_REIMPORT, import_calls, 1, polls, **budget
        )

    batches = options.get(SyncStrategy.BATCHES)
    clear = options.get(SyncStrategy.CLEAR_AND_REIMPORT)
    if batches is None:
        assert clear is not None  # no batches only when members must be removed by email
        chosen, reason = (
            clear,
            "the export has no contact ids, so members can only be removed by clearing",
        )
        clear_offered = True
    else:
        chosen = batches
        reason = "nothing to remove" if not removes else "the list is never emptied"
        clear_offered = (
            clear is not None
            and batches.removal_calls >= CLEAR_OFFER_MIN_REMOVAL_CALLS
            and clear.total_calls < batches.total_calls
        )
    clear_note = ""
    if clear is not None and clear_offered:
        low, high = ((1 + clear.import_calls) * s for s in ACTIVITY_SECONDS_RANGE)
        saving = (
            f"saves {batches.total_calls - clear.total_calls:,} calls "
            f"({clear.total_calls:,} instead of {batches.total_calls:,}); "
            if batches is not None
            else ""
        )
        clear_note = (
            f"Clearing and re-importing {saving}the list is then incomplete from the moment CC "
            f"empties it until the last of {clear.import_calls:,} re-import(s) finishes — "
            f"about {_duration(low)} to {_duration(high)} at CC's pace, longer if the job "
            "waits on the budget — and contacts who unsubscribed cannot be added back. It "
            "starts only when today's remaining budget covers the whole re-import."
        )
        if not options[SyncStrategy.CLEAR_AND_REIMPORT].fits_today:
            clear_note += " Today's budget does not cover it now."

    share = removes / current_count if current_count else (1.0 if removes else 0.0)
    removing = set(diff.remove_emails)
    named = sorted(removing & {email.strip().lower() for email in mentioned})
    reasons = []
    if removes and share > confirm_share:
        reasons.append(
            f"it removes {removes:,} of the list's {current_count:,} members ({share:.0%}, "
            f"more than {confirm_share:.0%})"
        )
    if named:
        shown = ", ".join(named[:3]) + (f" and {len(named) - 3:,} more" if len(named) > 3 else "")
        reasons.append(f"it removes members the file names in rows it refused ({shown})")
    removal_note = (
        "Confirm the removals before running: " + "; ".join(reasons) + "." if reasons else ""
    )
    return SyncPlan(
        adds=adds,
        removes=removes,
        unchanged=diff.unchanged,
        current_members=current_count,
        strategy=chosen.strategy,
        reason=reason,
        import_calls=chosen.import_calls,
        removal_calls=chosen.removal_calls,
        export_calls=EXPORT_CALLS,
        expected_polls=chosen.expected_polls,
        total_calls=chosen.total_calls,
        calls_after_export=chosen.calls_after_export,
        single_call_equivalent=adds + removes,
        remaining_today=remaining_today,
        per_day=per_day,
        fits_today=chosen.fits_today,
        days_needed=chosen.days_needed,
        earliest_fit=chosen.earliest_fit,
        options={name: asdict(cost) for name, cost in options.items()},
        clear_offered=clear_offered,
        clear_note=clear_note,
        removal_share=share,
        removal_mentioned=named[:50],
        removals_need_confirmation=bool(reasons),
        removal_note=removal_note,
    )

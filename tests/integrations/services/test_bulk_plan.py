"""Planning a sync: the diff, the import chunks and the strategy that removes members."""

from __future__ import annotations

import json
import uuid

import pytest

from integrations.constant_contact.client import json_import_body
from integrations.constant_contact.limits import IMPORT_MAX_BYTES, IMPORT_MAX_CONTACTS
from integrations.models.jobs import plan_calls_planned
from integrations.services.bulk_plan import (
    RESET_HINT,
    MembershipDiff,
    chunk_sizes,
    import_chunks,
    membership_diff,
    plan_choose,
    plan_summary,
    sync_plan,
)

LIST_ID = str(uuid.uuid4())

# --- membership_diff ------------------------------------------------------------------------------

CURRENT = {"ann@example.com": "id-ann", "bob@example.com": "id-bob", "cy@example.com": "id-cy"}


def test_replace_diff_adds_missing_and_removes_undesired_by_contact_id():
    diff = membership_diff(
        ["zed@example.com", "Ann@Example.com", "dee@example.com"], CURRENT, mode="replace"
    )

    assert diff.adds == ["dee@example.com", "zed@example.com"]
    assert diff.removes == ["id-bob", "id-cy"]
    assert diff.remove_emails == ["bob@example.com", "cy@example.com"]
    assert diff.removes_by_id
    assert diff.unchanged == 1


def test_add_diff_never_removes():
    diff = membership_diff({"ann@example.com": {}, "dee@example.com": {}}, CURRENT, mode="add")

    assert diff == MembershipDiff(mode="add", adds=["dee@example.com"], removes=[], unchanged=1)


def test_replace_diff_falls_back_to_emails_when_the_export_has_no_ids():
    current = {"ann@example.com": "", "bob@example.com": ""}

    diff = membership_diff([], current, mode="replace")

    assert diff.removes == ["ann@example.com", "bob@example.com"]
    assert not diff.removes_by_id


def test_replace_diff_keeps_members_whose_rows_were_rejected_for_a_field():
    diff = membership_diff(["ann@example.com"], CURRENT, mode="replace", keep={"BOB@example.com"})

    assert diff.removes == ["id-cy"]
    assert diff.kept == 1


def test_diff_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="mode must be one of replace, add"):
        membership_diff([], {}, mode="sync")


# --- import_chunks --------------------------------------------------------------------------------


def payload_sizes(chunks: list[list[dict]]) -> list[int]:
    return [len(json_import_body(chunk, [LIST_ID])) for chunk in chunks]


def test_40001_contacts_make_two_chunks_under_the_limits():
    contacts = {f"person{i:05d}@example.com": {"first_name": f"P{i}"} for i in range(40_001)}

    chunks = list(import_chunks(contacts, sorted(contacts)))

    assert [len(chunk) for chunk in chunks] == [IMPORT_MAX_CONTACTS, 1]
    assert all(size < IMPORT_MAX_BYTES for size in payload_sizes(chunks))
    assert chunks[1] == [{"email": "person40000@example.com", "first_name": "P40000"}]


def test_long_values_force_a_split_by_bytes_and_every_payload_stays_under():
    street = "S" * 255
    contacts = {
        f"p{i}@example.com": {"street": street, "street2": street, "cf:notes": "é" * 200}
        for i in range(3_000)
    }
    max_bytes = 1_000_000

    chunks = list(import_chunks(contacts, sorted(contacts), max_bytes=max_bytes))

    assert len(chunks) > 1
    sizes = payload_sizes(chunks)
    assert all(size < max_bytes for size in sizes)
    assert max(sizes) > max_bytes * 0.99  # chunks are filled, not cut early
    assert sum(len(chunk) for chunk in chunks) == 3_000
    assert chunk_sizes(contacts, sorted(contacts), max_bytes=max_bytes) == [len(c) for c in chunks]


def test_payload_size_measurement_is_exact_at_the_boundary():
    contacts = {f"p{i}@example.com": {} for i in range(10)}
    exact = len(json_import_body([{"email": e} for e in sorted(contacts)[:3]], [LIST_ID]))

    chunks = list(import_chunks(contacts, sorted(contacts), max_bytes=exact + 1))

    assert [len(chunk) for chunk in chunks] == [3, 3, 3, 1]
    assert [len(c) for c in import_chunks(contacts, sorted(contacts), max_bytes=exact)] == [2] * 5


def test_import_items_carry_fields_and_integer_birthdays():
    contacts = {
        "ann@example.com": {"first_name": "Ann", "birthday_month": "3", "birthday_day": "7"}
    }

    (chunk,) = import_chunks(contacts, ["ann@example.com", "new@example.com"])

    assert chunk == [
        {"email": "ann@example.com", "first_name": "Ann", "birthday_month": 3, "birthday_day": 7},
        {"email": "new@example.com"},
    ]
    body = json.loads(json_import_body(chunk, [LIST_ID]))
    assert body == {"import_data": chunk, "list_ids": [LIST_ID]}


def test_a_contact_too_big_for_any_payload_raises():
    with pytest.raises(ValueError, match="alone makes"):
        list(
            import_chunks(
                {"a@example.com": {"street": "S" * 255}}, ["a@example.com"], max_bytes=200
            )
        )


# --- sync_plan ------------------------------------------------------------------------------------


def make_diff(
    *,
    adds: int = 0,
    removes: int = 0,
    unchanged: int = 0,
    by_id: bool = True,
    mode: str = "replace",
):
    return MembershipDiff(
        mode=mode,
        adds=[f"add{i}@example.com" for i in range(adds)],
        removes=[f"id-{i}" if by_id else f"rm{i}@example.com" for i in range(removes)],
        unchanged=unchanged,
        removes_by_id=by_id,
    )


def sizes(count: int) -> list[int]:
    full, rest = divmod(count, IMPORT_MAX_CONTACTS)
    return [IMPORT_MAX_CONTACTS] * full + ([rest] if rest else [])


def plan(
    diff: MembershipDiff,
    *,
    remaining_today: int = 10_000,
    per_day: int = 10_000,
    current: int | None = None,
    mentioned: tuple[str, ...] = (),
):
    desired = len(diff.adds) + diff.unchanged
    return sync_plan(
        diff=diff,
        desired_count=desired,
        current_count=diff.unchanged + len(diff.removes) if current is None else current,
        chunk_sizes_adds=sizes(len(diff.adds)),
        chunk_sizes_all=sizes(desired),
        remaining_today=remaining_today,
        per_day=per_day,
        mentioned=mentioned,
    )


def test_the_incremental_plan_is_the_default_even_where_clearing_costs_less():
    # 100,000 members, 5,000 to go: 10 removal batches cost more than 1 clear + 3 imports,
    # but emptying the list for minutes is not worth 4 calls: batches, and no offer.
    result = plan(make_diff(removes=5_000, unchanged=95_000))

    assert result.strategy == "batches"
    assert (result.removal_calls, result.import_calls) == (10, 0)
    assert (result.total_for("batches"), result.total_for("clear_and_reimport")) == (16, 12)
    assert not result.clear_offered
    assert any("never emptied" in line for line in result.summary())


def test_clearing_is_offered_where_it_saves_real_budget_and_says_how_long_the_list_is_short():
    # 15,000 of 110,000 to remove: 30 batches against 1 clear + 3 imports.
    result = plan(make_diff(removes=15_000, unchanged=95_000))

    assert result.strategy == "batches"  # still the default: the person must choose clearing
    assert result.clear_offered
    assert (result.total_for("batches"), result.total_for("clear_and_reimport")) == (36, 12)
    assert "saves 24 calls" in result.clear_note
    assert "incomplete from the moment CC empties it" in result.clear_note
    assert "about 2 min to 60 min" in result.clear_note  # 4 activities of 30 s to 15 min


def test_choosing_to_clear_switches_every_figure_of_the_plan():
    result = plan(make_diff(removes=15_000, unchanged=95_000)).as_dict()
    result["chunk_sizes_by_strategy"] = {"batches": [], "clear_and_reimport": sizes(95_000)}
    chosen = plan_choose(result, "clear_and_reimport")

    assert chosen["strategy"] == "clear_and_reimport"
    assert (chosen["import_calls"], chosen["removal_calls"], chosen["total_calls"]) == (3, 1, 12)
    assert chosen["chunk_sizes"] == sizes(95_000)
    assert any("Strategy: empty the list" in line for line in chosen["summary"])


def test_clearing_cannot_be_chosen_where_it_is_not_offered():
    result = plan(make_diff(removes=200, unchanged=9_800)).as_dict()
    with pytest.raises(ValueError, match="not offered"):
        plan_choose(result, "clear_and_reimport")


def test_few_removals_use_batches():
    result = plan(make_diff(adds=10, removes=200, unchanged=99_800))

    assert result.strategy == "batches"
    assert (result.import_calls, result.removal_calls, result.export_calls) == (1, 1, 2)
    assert result.expected_polls == 4  # the export's wave, then one wave for imports + removals
    assert result.total_calls == 8
    assert result.calls_after_export == 4
    assert result.single_call_equivalent == 210


def test_removals_without_contact_ids_must_clear_and_reimport():
    result = plan(make_diff(removes=3, unchanged=10, by_id=False))

    assert result.strategy == "clear_and_reimport"
    assert result.total_for("batches") is None
    assert "no contact ids" in result.reason


@pytest.mark.parametrize(
    ("removes", "current", "needs"),
    [(10, 100, False), (11, 100, True), (0, 0, False), (5, 5, True)],
)
def test_removing_more_than_a_tenth_of_the_list_needs_confirming(removes, current, needs):
    result = plan(make_diff(removes=removes, unchanged=current - removes), current=current)
    assert result.removals_need_confirmation is needs
    assert ("Confirm the removals" in result.removal_note) is needs


def test_removing_a_member_the_file_names_needs_confirming():
    diff = MembershipDiff(
        mode="replace",
        adds=[],
        removes=["id-1"],
        unchanged=99,
        remove_emails=["ann@example.com"],
    )
    result = plan(diff, current=100, mentioned=("Ann@Example.com",))
    assert result.removals_need_confirmation
    assert result.removal_mentioned == ["ann@example.com"]
    assert "names in rows it refused (ann@example.com)" in result.removal_note


def test_nothing_to_remove_only_imports():
    result = plan(make_diff(adds=5, unchanged=5, mode="add"))

    assert result.strategy == "batches"
    assert result.total_for("clear_and_reimport") is None
    assert (result.import_calls, result.removal_calls, result.total_calls) == (1, 0, 7)


def test_nothing_to_do_costs_only_the_export():
    result = plan(make_diff(unchanged=5))

    assert (result.import_calls, result.removal_calls, result.expected_polls) == (0, 0, 2)
    assert result.total_calls == 4


@pytest.mark.parametrize(
    ("removes", "remaining_today", "per_day", "fits_today", "earliest_fit", "days"),
    [
        (200, 7, 10_000, True, None, 1),
        (200, 6, 10_000, False, RESET_HINT, 1),
        (100_000, 50, 100, False, "spread over 3 days", 3),
    ],
)
def test_budget_fit_flags(removes, remaining_today, per_day, fits_today, earliest_fit, days):
    diff = make_diff(removes=removes, unchanged=4_000_000)
    result = plan(diff, remaining_today=remaining_today, per_day=per_day)

    assert result.fits_today is fits_today
    assert result.earliest_fit == earliest_fit
    assert result.days_needed == days
    assert any(("Fits today's" in line) is fits_today for line in result.summary()[-2:])


def test_plan_is_json_serialisable_with_its_summary():
    result = plan(make_diff(adds=3, removes=2, unchanged=1))

    data = json.loads(json.dumps(result.as_dict()))

    assert data["strategy"] == "batches"
    assert data["total_calls"] == result.total_calls
    assert data["summary"] == result.summary()


def test_plan_refuses_an_add_diff_with_removals():
    with pytest.raises(ValueError, match="cannot remove"):
        plan(make_diff(removes=1, mode="add"))


def test_plan_refuses_chunk_sizes_that_do_not_match_the_diff():
    with pytest.raises(ValueError, match="chunk_sizes_adds"):
        sync_plan(
            diff=make_diff(adds=3),
            desired_count=3,
            current_count=0,
            chunk_sizes_adds=[2],
            chunk_sizes_all=[3],
            remaining_today=100,
            per_day=100,
        )


# --- the call figure a job shows ----------------------------------------------------------------
def _calls_line(summary: list[str]) -> str:
    return next(line for line in summary if line.startswith("API calls:"))


def test_before_the_export_the_call_line_is_the_whole_estimate():
    result = plan(make_diff(adds=10, removes=200, unchanged=99_800)).as_dict()

    assert plan_calls_planned(result) == result["total_calls"] == 8
    assert _calls_line(result["summary"]).startswith("API calls: 2 export + 1 import")
    assert "= 8 (one call per contact" in _calls_line(result["summary"])


def test_after_the_export_the_call_line_counts_its_calls_as_they_went_and_ends_in_the_jobs_figure():
    # The export took 5 calls (3 polls instead of the 2 expected): the job plans 5 + 4, not 8.
    result = {
        **plan(make_diff(adds=10, removes=200, unchanged=99_800)).as_dict(),
        "planning_calls": 5,
    }

    assert plan_calls_planned(result) == 5 + result["calls_after_export"] == 9
    line = _calls_line(plan_summary(result))
    assert line.startswith(
        "API calls: 5 made planning (the export and its status polls) + 1 import"
    )
    assert "+ ~2 status polls = 9 planned (one call per contact" in line


def test_choosing_another_strategy_gives_that_strategys_figure_in_the_same_words():
    result = {**plan(make_diff(removes=15_000, unchanged=95_000)).as_dict(), "planning_calls": 3}
    result["chunk_sizes_by_strategy"] = {"batches": [], "clear_and_reimport": sizes(95_000)}
    clearing = result["options"]["clear_and_reimport"]["calls_after_export"]

    chosen = plan_choose(result, "clear_and_reimport")

    assert (
        plan_calls_planned(result, "clear_and_reimport")
        == plan_calls_planned(chosen)
        == 3 + clearing
    )
    assert f"= {3 + clearing} planned" in _calls_line(chosen["summary"])
    assert plan_calls_planned(result) == 3 + result["options"]["batches"]["calls_after_export"]

"""How far along a sync job is and how long it has left: the arithmetic, then what a job says."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from integrations.models import BulkJob, JobPhase, JobState
from integrations.models.jobs import duration_text
from integrations.services.bulk_jobs import bulk_job_progress
from integrations.services.bulk_progress import progress_estimate, stage_fraction
from tests.factories import ConnectedAccountFactory


def _activity(state: str, percent: int = 0) -> dict:
    return {"id": f"a-{state}-{percent}", "state": state, "percent": percent}


# --- the stage's fraction ---------------------------------------------------------------------
def test_no_steps_and_no_data_is_zero():
    assert stage_fraction(steps_total=0, steps=[]) == 0.0
    assert stage_fraction(steps_total=3, steps=[]) == 0.0


def test_mid_import_counts_the_steps_done_and_ccs_percent_of_the_one_under_way():
    # Two imports and a removal batch: the removal is done, the first import is at 40%.
    steps = [_activity("processing", 40), _activity("completed", 100)]
    assert stage_fraction(steps_total=3, steps=steps) == pytest.approx((1 + 0.40) / 3)


def test_every_activity_under_way_adds_its_percent():
    steps = [_activity("processing", 50), _activity("processing", 30)]
    assert stage_fraction(steps_total=2, steps=steps) == pytest.approx(0.40)


def test_a_finished_activity_counts_whole_whatever_its_percent_says():
    assert stage_fraction(steps_total=2, steps=[_activity("completed", 0)]) == 0.5


def test_the_bar_moves_at_every_poll_and_never_reads_100_before_completion():
    polls = [
        [_activity("initialized", 0)],
        [_activity("processing", 12)],
        [_activity("processing", 64)],
        [_activity("completed", 100)],
    ]
    fractions = [stage_fraction(steps_total=1, steps=steps) for steps in polls]
    assert fractions == sorted(fractions) and len(set(fractions)) == 4
    assert 0 < fractions[1] < fractions[2] < 1
    assert fractions[-1] == 0.99
    assert stage_fraction(steps_total=1, steps=polls[-1], completed=True) == 1.0


# --- time elapsed and left ----------------------------------------------------------------------
def test_no_data_is_zero_and_estimating():
    estimate = progress_estimate(fraction=0.0, started_at=1000.0, measured_at=1000.0, now=1010.0)
    assert (estimate.percent, estimate.estimating) == (0, True)
    assert estimate.remaining_text == "estimating…"
    assert estimate.elapsed_text == "10 s"


def test_not_started_has_no_elapsed_time():
    estimate = progress_estimate(fraction=0.0, started_at=None, measured_at=None, now=5.0)
    assert estimate.elapsed_seconds is None and estimate.elapsed_text == ""


def test_time_left_is_extrapolated_from_the_rate_so_far():
    # A quarter done 60 s in: three quarters take 180 s more, 10 of which have passed since.
    estimate = progress_estimate(fraction=0.25, started_at=0.0, measured_at=60.0, now=70.0)
    assert estimate.remaining_seconds == pytest.approx(170.0)
    assert estimate.remaining_text == "about 3 min left"
    assert estimate.elapsed_text == "1 min 10 s"


def test_too_little_to_go_on_is_still_estimating():
    barely_started = progress_estimate(fraction=0.01, started_at=0.0, measured_at=60.0, now=61.0)
    too_soon = progress_estimate(fraction=0.5, started_at=0.0, measured_at=1.0, now=1.5)
    assert barely_started.estimating and too_soon.estimating


def test_a_stage_that_does_not_move_has_no_estimate():
    paused = progress_estimate(
        fraction=0.5, started_at=0.0, measured_at=60.0, now=100.0, moving=False
    )
    assert paused.estimating and paused.elapsed_text == "1 min 40 s"


def test_an_overdue_estimate_says_almost_done_not_a_negative_time():
    late = progress_estimate(fraction=0.9, started_at=0.0, measured_at=90.0, now=500.0)
    assert late.remaining_seconds == 0.0 and late.remaining_text == "almost done"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (45, "45 s"),
        (134, "2 min 14 s"),
        (120, "2 min"),
        (3_600, "1 h"),
        (3_900, "1 h 5 min"),
        (2 * 86_400 + 3 * 3_600 + 59, "2 d 3 h"),
    ],
)
def test_durations_read_as_people_say_them(seconds, text):
    assert duration_text(seconds) == text


# --- what a job says ----------------------------------------------------------------------------
@pytest.fixture
def running_job(db) -> BulkJob:
    started = timezone.now() - dt.timedelta(seconds=120)
    return BulkJob.objects.create(
        account=ConnectedAccountFactory(),
        list_id="list-1",
        state=JobState.RUNNING,
        phase=JobPhase.WAIT_ALL,
        started_at=started,
        plan={"strategy": "batches", "import_calls": 2, "removal_calls": 1},
        checkpoint={
            "export": _activity("completed", 100),
            "activities": [
                {**_activity("completed", 100), "kind": "import", "chunk": 0},
                {**_activity("processing", 50), "kind": "import", "chunk": 1},
                {**_activity("initialized", 0), "kind": "remove", "batch": 0},
            ],
        },
        progress={"updated": started.timestamp() + 60},
    )


def test_a_job_mid_import_shows_the_run_stage_from_ccs_percent(running_job):
    progress = bulk_job_progress(running_job, now=running_job.started_at.timestamp() + 60)
    assert progress["stage"] == "run"
    assert progress["fraction"] == pytest.approx(1.5 / 3)
    assert progress["percent"] == 50
    # Half done in 60 s: about 60 s left.
    assert progress["remaining_text"] == "about 1 min left"
    assert progress["elapsed_text"] == "1 min"


def test_a_job_waiting_for_approval_has_not_started_its_run(running_job):
    running_job.state, running_job.started_at, running_job.checkpoint = (
        JobState.PLANNED,
        None,
        {"export": _activity("completed", 100)},
    )
    progress = bulk_job_progress(running_job)
    assert (progress["stage"], progress["percent"], progress["elapsed_text"]) == ("run", 0, "")
    assert progress["estimating"]


def test_a_planning_job_follows_its_export(running_job):
    running_job.state, running_job.started_at = JobState.PLANNING, None
    running_job.checkpoint = {"export": _activity("processing", 30)}
    progress = bulk_job_progress(running_job)
    assert (progress["stage"], progress["percent"]) == ("planning", 30)


def test_a_completed_job_reads_100_and_says_how_long_it_took(running_job):
    running_job.state = JobState.COMPLETED
    running_job.finished_at = running_job.started_at + dt.timedelta(seconds=134)
    assert bulk_job_progress(running_job)["percent"] == 100
    assert running_job.duration == dt.timedelta(seconds=134)
    assert running_job.duration_text == "2 min 14 s"

"""When a job polls CC, and how its progress bar is computed: pure functions."""

from __future__ import annotations

import pytest

from integrations.services.bulk_polling import (
    first_poll_schedule,
    next_poll_delay,
    overall_percent,
)

NOW = 1_000_000.0


def _delays(activities, *, steps: int, delay: float = 3.2) -> list[float]:
    out = []
    for _ in range(steps):
        wait, delay = next_poll_delay(delay=delay, max_delay=30.0, activities=activities, now=NOW)
        out.append(round(wait, 2))
    return out


def test_polls_start_at_2_s_and_back_off_geometrically_to_30_s():
    poll_at, after = first_poll_schedule(now=NOW, first_delay=2.0)
    assert (poll_at - NOW, after) == (2.0, 3.2)
    # An activity CC reports no progress on: the geometric back-off alone.
    silent = [{"id": "a", "state": "processing", "percent": 0, "submitted_at": NOW}]
    assert _delays(silent, steps=8) == [3.2, 5.12, 8.19, 13.11, 20.97, 30.0, 30.0, 30.0]


def test_ccs_own_pace_stretches_the_wait_but_never_past_the_maximum():
    # Half done after 40 s: CC's pace says 40 s more; the wait is capped at 30 s.
    half = [{"id": "a", "state": "processing", "percent": 50, "submitted_at": NOW - 40}]
    assert next_poll_delay(delay=2.0, max_delay=30.0, activities=half, now=NOW)[0] == 30.0
    # Nearly finished: polled again soon, not after a long back-off.
    nearly = [{"id": "a", "state": "processing", "percent": 95, "submitted_at": NOW - 19}]
    wait, _ = next_poll_delay(delay=2.0, max_delay=30.0, activities=nearly, now=NOW)
    assert 2.0 <= wait < 3.0


def test_a_wave_run_one_after_another_waits_for_its_total_work():
    # Two activities, one done and one untouched after 10 s: 10 s more for the second.
    wave = [
        {"id": "a", "state": "completed", "percent": 100, "submitted_at": NOW - 10},
        {"id": "b", "state": "processing", "percent": 0, "submitted_at": NOW - 10},
    ]
    wait, _ = next_poll_delay(delay=2.0, max_delay=30.0, activities=wave, now=NOW)
    assert wait == pytest.approx(10 * 1.1 + 0.25)


@pytest.mark.parametrize(
    ("completed", "progress", "percent"),
    [
        (True, {}, 100),
        (False, {}, 0),
        (False, {"activities_total": 4, "activities_done": 1, "cc_percent": 50}, 37),
        (False, {"activities_total": 1, "activities_done": 1, "cc_percent": 100}, 99),
    ],
)
def test_the_progress_bar_reaches_100_only_when_the_job_completes(completed, progress, percent):
    assert overall_percent(completed=completed, progress=progress) == percent

"""When to ask CC again about a sync job's activities, and how far along the job is.

Pure functions over the activity records a job keeps in its checkpoint (dicts with ``state``,
``percent`` and ``submitted_at``): no clock is read here, the caller passes ``now``.

Activities are polled ~2 s after submission, then at intervals growing ``POLL_BACKOFF`` times,
up to the maximum delay, or later when CC's ``percent_done`` predicts a longer wait: a long
import costs a couple of polls rather than one per back-off step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from integrations.constant_contact.limits import ACTIVITY_TERMINAL_STATES

POLL_BACKOFF = 1.6
# A prediction is stretched a little, so the poll lands just after the activity ends.
PREDICTION_SLACK = 1.1
PREDICTION_PAD_SECONDS = 0.25


def activity_percent(activity: dict[str, Any]) -> float:
    """How far CC says one activity is, 100 once it is finished."""
    if activity.get("state") in ACTIVITY_TERMINAL_STATES:
        return 100.0
    return float(activity.get("percent") or 0)


def first_poll_schedule(*, now: float, first_delay: float) -> tuple[float, float]:
    """``(poll_at, delay_after)``: the first poll of a newly submitted wave."""
    return now + first_delay, first_delay * POLL_BACKOFF


def next_poll_delay(
    *, delay: float, max_delay: float, activities: Sequence[dict[str, Any]], now: float
) -> tuple[float, float]:
    """``(wait, delay_after)``: how long to wait before the next poll of ``activities``, and
    the back-off delay for the one after.

    The wait is the back-off ``delay``, unless CC's ``percent_done`` predicts the wave needs
    longer: then (a little more than) the predicted time, never past ``max_delay``. Two
    predictions are taken and the longer kept: the activities run one after another (the wave
    ends when its total work is done) or side by side (when its slowest activity is done).
    """
    predictions = [0.0]
    started = min((a.get("submitted_at") or now) for a in activities) if activities else now
    done = sum(activity_percent(a) for a in activities)
    if done > 0:
        predictions.append((now - started) * (100 * len(activities) - done) / done)
    for activity in activities:
        percent = activity_percent(activity)
        if 0 < percent < 100:
            elapsed = now - (activity.get("submitted_at") or now)
            predictions.append(elapsed * (100 - percent) / percent)
    predicted = max(predictions) * PREDICTION_SLACK + PREDICTION_PAD_SECONDS
    wait = min(max_delay, max(delay, predicted))
    return wait, min(max_delay, delay * POLL_BACKOFF)


def overall_percent(*, completed: bool, progress: dict[str, Any]) -> int:
    """The job's progress bar: activities done plus CC's percent of the current one; 100 only
    once the job has completed."""
    if completed:
        return 100
    done = progress.get("activities_done", 0)
    total = progress.get("activities_total", 0)
    current = progress.get("cc_percent", 0) or 0
    if not total:
        return 0
    return min(99, int(100 * (done + current / 100) / total))

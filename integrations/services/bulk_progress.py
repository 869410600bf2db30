"""How far along a sync job is, and how long it has left: pure functions, no clock read here.

A job moves in two stages, each with its own bar: planning (the export of the list, and of the
source list when there is one) and the run (the clear, when chosen, then every import and
removal batch). A stage's steps are CC activities; the bar is the steps done plus CC's
``percent_done`` of those still going, over the stage's steps, so it moves at every status
poll, not only when an activity ends. It reads 100% only once the job has completed.

The time left is extrapolated from the rate so far (the fraction done when the worker last
measured it, over the time it took); until there is enough to go on it is unknown, which
pages show as "estimating…".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from integrations.models.jobs import duration_text
from integrations.services.bulk_polling import activity_percent

#: Below this fraction done, an extrapolation says more about noise than about the job.
ESTIMATE_MIN_FRACTION = 0.02
#: Nor is a rate measured over less than this many seconds worth extrapolating.
ESTIMATE_MIN_SECONDS = 3.0
#: The bar stops here until the job has completed: CC's activities can all be done while the
#: job still records their results.
UNFINISHED_CAP = 0.99


def stage_fraction(
    *, steps_total: int, steps: Iterable[Mapping[str, Any]], completed: bool = False
) -> float:
    """(steps done + CC's ``percent_done`` / 100 of each step under way) / ``steps_total``.

    ``steps`` are the activity records of the stage submitted so far (``state``,
    ``percent``); those not yet submitted count as 0. A finished activity counts whole
    whatever ``percent`` says. 1.0 only when ``completed``; 0.0 with no steps.
    """
    if completed:
        return 1.0
    if steps_total < 1:
        return 0.0
    done = sum(activity_percent(dict(step)) for step in steps) / 100
    return max(0.0, min(UNFINISHED_CAP, done / steps_total))


@dataclass(frozen=True)
class ProgressEstimate:
    """How far along, how long so far, and how long still to go (None: not known yet)."""

    fraction: float
    elapsed_seconds: float | None
    remaining_seconds: float | None

    @property
    def percent(self) -> int:
        return int(100 * self.fraction)

    @property
    def estimating(self) -> bool:
        return self.remaining_seconds is None

    @property
    def elapsed_text(self) -> str:
        return "" if self.elapsed_seconds is None else duration_text(self.elapsed_seconds)

    @property
    def remaining_text(self) -> str:
        """ "about 2 min left", "almost done", or "estimating…"."""
        if self.remaining_seconds is None:
            return "estimating…"
        if self.remaining_seconds < 1:
            return "almost done"
        return f"about {duration_text(_rounded(self.remaining_seconds))} left"


def _rounded(seconds: float) -> float:
    """An estimate shown no finer than it is: to 5 s under two minutes, else to the minute."""
    step = 5 if seconds < 120 else 60
    return max(step, step * round(seconds / step))


def progress_estimate(
    *,
    fraction: float,
    started_at: float | None,
    measured_at: float | None,
    now: float,
    moving: bool = True,
) -> ProgressEstimate:
    """The estimate for a stage that started at ``started_at`` and was ``fraction`` done at
    ``measured_at`` (epoch seconds), seen at ``now``.

    The time left is ``(1 - fraction) / rate - (now - measured_at)`` with ``rate = fraction /
    (measured_at - started_at)``, never below 0; it is None (estimating) for a stage that is
    not ``moving`` (paused, waiting, ended), has not started, or has less than
    ``ESTIMATE_MIN_FRACTION`` done or ``ESTIMATE_MIN_SECONDS`` measured.
    """
    fraction = max(0.0, min(1.0, fraction))
    if started_at is None:
        return ProgressEstimate(fraction=fraction, elapsed_seconds=None, remaining_seconds=None)
    elapsed = max(0.0, now - started_at)
    measured_over = None if measured_at is None else measured_at - started_at
    if (
        not moving
        or fraction >= 1.0
        or fraction < ESTIMATE_MIN_FRACTION
        or measured_over is None
        or measured_over < ESTIMATE_MIN_SECONDS
    ):
        return ProgressEstimate(fraction=fraction, elapsed_seconds=elapsed, remaining_seconds=None)
    rate = fraction / measured_over
    remaining = (1.0 - fraction) / rate - max(0.0, now - measured_at)
    return ProgressEstimate(
        fraction=fraction, elapsed_seconds=elapsed, remaining_seconds=max(0.0, remaining)
    )

"""One bulk activity as the sandbox stores it: what was asked, when it runs, what it did.

An account holds its activities (``state.Account.activities``); the engine in
:mod:`integrations.sandbox.activities` creates, settles and renders them. This module imports
nothing from either, so the dependency runs one way: ``activities`` → ``state`` → here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: At most this many ``activity_errors`` messages are kept per activity.
MAX_REPORTED_ERRORS = 500


@dataclass(eq=False)
class Activity:
    activity_id: str
    kind: str
    created_at: float
    start_at: float
    complete_at: float
    items_total: int
    # Imports: rows (dicts) with their labels; exports: contact ids; memberships: contact ids.
    rows: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    contact_ids: list[str] = field(default_factory=list)
    list_ids: list[str] = field(default_factory=list)  # target lists
    export_fields: list[str] = field(default_factory=list)
    source_file_name: str | None = None
    person_count: int = 0
    error_count: int = 0
    cannot_add_to_list_count: int = 0
    errors: list[str] = field(default_factory=list)
    completed: bool = False
    csv: bytes | None = None
    # An injected fault's end state (failed, timed_out, cancelled): the activity ends in it
    # when it would have completed, having applied nothing.
    end_state: str | None = None
    # What the activity does, as a digest (kind, target lists, contacts): two applied
    # activities with the same fingerprint are the same request applied twice.
    fingerprint: str = ""
    applied_at: float | None = None

    @property
    def ended_badly(self) -> bool:
        return self.completed and self.end_state is not None

    def progress(self, now: float) -> tuple[str, int, float]:
        """(state, percent_done, fraction done) at sandbox time ``now``."""
        if self.ended_badly:
            return str(self.end_state), 0, 0.0
        if self.completed:
            return "completed", 100, 1.0
        if now <= self.start_at:
            return "initialized", 0, 0.0
        duration = self.complete_at - self.start_at
        fraction = 1.0 if duration <= 0 else min(1.0, (now - self.start_at) / duration)
        # 100 only once the effects are applied.
        return "processing", min(99, int(fraction * 100)), min(fraction, 0.99)

    def state(self, now: float) -> str:
        return self.progress(now)[0]

    def error(self, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(message)

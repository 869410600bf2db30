"""An in-process stand-in for the sender behind :class:`~.client.ConstantContact`, for tests.

The sandbox is the faithful Constant Contact; this is the quick one. It records every call the
client makes and answers from a script: a canned value, a function of the call, or a CC error
to raise. A call nothing was scripted for fails the test loudly::

    fake = FakeSender()
    fake.answer("POST", "/activities/contact_exports", {"activity_id": "a1", "state": "initialized"})
    fake.answer("GET", "/activities/*", raises=CCServerError(status=503, method="GET", path="..."))
    client = ConstantContact(fake)
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SentCall:
    """One call the client made, as the gateway would have received it."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    data: bytes | None = None
    files: dict[str, Any] | None = None
    accept: str = "application/json"


@dataclass
class _Answer:
    method: str
    pattern: str
    reply: Any
    raises: BaseException | None
    times: int | None
    used: int = field(default=0)

    def matches(self, method: str, path: str) -> bool:
        bare = path.split("?", 1)[0]
        return method == self.method and fnmatch.fnmatchcase(bare, self.pattern)

    @property
    def spent(self) -> bool:
        return self.times is not None and self.used >= self.times


class UnexpectedCall(AssertionError):
    """The client made a call the test did not script."""


class FakeSender:
    """A scripted sender: ``answer(...)`` what to reply, read ``calls`` for what was sent."""

    def __init__(self) -> None:
        self.calls: list[SentCall] = []
        self._answers: list[_Answer] = []

    def answer(
        self,
        method: str,
        path: str,
        reply: Any = None,
        *,
        raises: BaseException | None = None,
        times: int | None = None,
    ) -> None:
        """Answer ``method`` calls to ``path`` (shell-style wildcards, query ignored) with
        ``reply`` — a value, or a function of the :class:`SentCall` — or by raising ``raises``.
        ``times`` limits how often; the first unspent match wins, in the order scripted."""
        self._answers.append(_Answer(method.upper(), path, reply, raises, times))

    def __call__(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        files: dict[str, Any] | None = None,
        data: bytes | None = None,
        accept: str = "application/json",
    ) -> Any:
        call = SentCall(method.upper(), path, params, json, data, files, accept)
        self.calls.append(call)
        for scripted in self._answers:
            if scripted.spent or not scripted.matches(call.method, call.path):
                continue
            scripted.used += 1
            if scripted.raises is not None:
                raise scripted.raises
            reply = scripted.reply
            return reply(call) if callable(reply) else reply
        raise UnexpectedCall(f"no answer scripted for {call.method} {call.path}")

    def sent(self, method: str | None = None, path: str = "*") -> list[SentCall]:
        """The calls made, optionally only those matching ``method`` and ``path``."""
        return [
            call
            for call in self.calls
            if (method is None or call.method == method.upper())
            and fnmatch.fnmatchcase(call.path.split("?", 1)[0], path)
        ]

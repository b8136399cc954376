"""Per-run event logs for server-sent events.

The service feeds every runtime event into ``RunEvents``; each run keeps its
log (replayed to late subscribers) until the service forgets the run. A log
ends with the ``run_finished`` event, which carries the run's final state.

Event kinds, in order for each stage call: ``call_queued``, ``call_started`` (and
``call_retried`` + another ``call_started`` when an engine failed it),
then ``call_finished`` (engine, timings, prompt/cached/output tokens) or
``call_cancelled`` (a call cancelled while still queued has no ``call_started``), or
``call_rejected`` (its pool's queue was full; the run ends ``rejected``).
``t`` is seconds since the run was admitted.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

TERMINAL_EVENT = "run_finished"
CALL_ENDED = frozenset({"call_finished", "call_cancelled", "call_rejected"})


@dataclass(slots=True)
class RunLog:
    events: list[dict[str, Any]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    queued: set[str] = field(default_factory=set)
    ended: set[str] = field(default_factory=set)   # calls with call_finished / call_cancelled

    @property
    def is_done(self) -> bool:
        return bool(self.events) and self.events[-1]["type"] == TERMINAL_EVENT

    def append(self, event: dict[str, Any]) -> None:
        event["seq"] = len(self.events) + 1
        self.events.append(event)
        self.changed.set()
        self.changed = asyncio.Event()


class RunEvents:
    """Owns the event logs of the runs the service retains."""

    def __init__(self) -> None:
        self._logs: dict[str, RunLog] = {}

    def open(self, run_id: str, event: dict[str, Any]) -> None:
        """Start a run's log with its admission event."""
        self._logs[run_id] = RunLog()
        self._logs[run_id].append(event)

    def add(self, run_id: str, event: dict[str, Any]) -> None:
        log = self._logs.get(run_id)
        if log is None or log.is_done:
            return  # a late event of a forgotten or finished run
        kind = event["type"]
        if kind == "call_queued":
            if event["call_id"] in log.queued:
                return
            log.queued.add(event["call_id"])
        elif kind in CALL_ENDED:
            log.ended.add(event["call_id"])
        log.append(event)

    def has_queued(self, run_id: str, call_id: str) -> bool:
        log = self._logs.get(run_id)
        return log is not None and call_id in log.queued

    def has_ended(self, run_id: str, call_id: str) -> bool:
        """Whether the call's ``call_finished`` or ``call_cancelled`` is in the log."""
        log = self._logs.get(run_id)
        return log is not None and call_id in log.ended

    def find(self, run_id: str, call_id: str, kind: str) -> dict[str, Any] | None:
        """The call's latest event of ``kind`` in the run's log, if any."""
        log = self._logs.get(run_id)
        if log is None:
            return None
        return next((e for e in reversed(log.events)
                     if e["type"] == kind and e.get("call_id") == call_id), None)

    def forget(self, run_id: str) -> None:
        self._logs.pop(run_id, None)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._logs

    async def follow(self, run_id: str, after: int = 0, heartbeat_s: float = 15.0
                     ) -> AsyncIterator[dict[str, Any] | None]:
        """Yield the run's events with ``seq > after``, live, until the terminal one.

        Yields ``None`` when ``heartbeat_s`` passes without an event (the caller
        sends a keep-alive). Raises KeyError for an unknown run.
        """
        log = self._logs[run_id]
        sent = max(0, after)
        while True:
            while sent < len(log.events):
                sent += 1
                yield log.events[sent - 1]
            if log.is_done:
                return
            changed = log.changed
            try:
                await asyncio.wait_for(changed.wait(), heartbeat_s)
            except asyncio.TimeoutError:
                yield None

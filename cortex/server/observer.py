"""Turn runtime events into per-run SSE logs, rolling stats and Prometheus metrics.

The runtime calls the observer synchronously for every event (it is one of
``RealtimeRuntime.listeners``), so each handler does a few dict updates only.
The orchestrator owns runs; the observer only reads them.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from cortex.core import CANCELLED
from cortex.orchestrator.run import Run, StageCall
from cortex.server.events import RunEvents
from cortex.server.metrics import ServerMetrics
from cortex.server.stats import CallSample, LiveStats, RunSample


class RuntimeObserver:
    """Args:
        events: the SSE logs to append to.
        stats: rolling dashboard figures.
        metrics: Prometheus counters and histograms.
        runs: the orchestrator's runs by id (read-only).
        clock: the runtime's clock.
        on_run_finished: told the id of every run that reached a terminal state.
    """

    def __init__(self, events: RunEvents, stats: LiveStats, metrics: ServerMetrics,
                 runs: Callable[[], dict[str, Run]], clock: Callable[[], float],
                 on_run_finished: Callable[[str], None]) -> None:
        self.events = events
        self.stats = stats
        self.metrics = metrics
        self._runs = runs
        self._clock = clock
        self._on_run_finished = on_run_finished
        self._handlers: dict[str, Callable[[dict[str, Any], Run], None]] = {
            "call_started": self._call_started,
            "call_finished": self._call_finished,
            "call_cancelled": self._call_cancelled,
            "call_retried": self._call_retried,
            "run_finished": self._run_finished,
        }

    def on_queue(self, call: StageCall, pool: str) -> None:
        """An LLM call is entering its pool's queue (called by the deployment's preparer)."""
        run = self._runs().get(call.run_id)
        if run is not None:
            self.events.add(call.run_id, _call_event("call_queued", call, pool,
                                                     self._clock() - run.arrival))

    def __call__(self, event: dict[str, Any]) -> None:
        run = self._runs().get(event["run_id"])
        handler = self._handlers.get(event["type"])
        if run is not None and handler is not None:
            handler(event, run)

    def _call_started(self, event: dict[str, Any], run: Run) -> None:
        call = run.inflight.get(event["call_id"])
        if call is not None and not self.events.has_queued(run.run_id, call.call_id):
            # Tool calls are not prepared, so their queued event is reported here,
            # stamped with the time they actually entered the queue.
            self.events.add(run.run_id, _call_event("call_queued", call, call.pool,
                                                    call.queued_at - run.arrival))
        out = _public(event, run)
        if call is not None:
            out["queue_wait_s"] = round(max(0.0, event["t"] - call.queued_at), 6)
        self.events.add(run.run_id, out)

    def _call_finished(self, event: dict[str, Any], run: Run) -> None:
        call = run.inflight.get(event["call_id"])
        wait = None
        if call is not None and call.started_at is not None:
            wait = max(0.0, call.started_at - call.queued_at)
        self.metrics.observe_call(event, wait)
        self.stats.add_call(CallSample(
            event["t"], event["pool"], event["engine"], wait or 0.0, event["service_s"] or 0.0,
            event["prompt_tokens"] or 0, event["cached_prompt_tokens"] or 0))
        self.events.add(run.run_id, _public(event, run))

    def _call_retried(self, event: dict[str, Any], run: Run) -> None:
        """The engine failed the call; it is back in its pool's queue for another."""
        self.events.add(run.run_id, _public(event, run))

    def _call_cancelled(self, event: dict[str, Any], run: Run) -> None:
        self.metrics.cancelled.labels(event["pool"], event["stage"]).inc()
        self.events.add(run.run_id, _public(event, run))

    def _run_finished(self, event: dict[str, Any], run: Run) -> None:
        self._report_cancelled_in_queue(run)
        latency = run.latency_s or 0.0
        self.metrics.observe_run(run.workflow.name, run.status.value, latency, run.met_slo)
        pools = frozenset(entry.pool for entry in run.trace if entry.pool)
        self.stats.add_run(RunSample(event["t"], run.workflow.name, run.status.value, latency,
                                     run.met_slo, pools))
        final = {"type": "run_finished", "t": round(latency, 6), **run_view(run)}
        self.events.add(run.run_id, final)
        self._on_run_finished(run.run_id)

    def _report_cancelled_in_queue(self, run: Run) -> None:
        """The runtime reports ``call_cancelled`` only for calls an engine had started; a
        call cancelled while still queued is in the trace (outcome ``cancelled``) and gets
        its ``call_cancelled`` here, before ``run_finished``, so that the events and the
        trace name the same calls."""
        for entry in run.trace:
            if entry.ran or self.events.has_ended(run.run_id, entry.call_id):
                continue
            if not self.events.has_queued(run.run_id, entry.call_id):
                self.events.add(run.run_id, {
                    "type": "call_queued", "run_id": run.run_id, "call_id": entry.call_id,
                    "stage": entry.stage, "attempt": entry.attempt, "pool": entry.pool,
                    "t": round(max(0.0, entry.queued_at - run.arrival), 6)})
            event = {"type": f"call_{entry.outcome}", "run_id": run.run_id,
                     "call_id": entry.call_id, "stage": entry.stage, "pool": entry.pool,
                     "engine": entry.engine_id, "t": entry.finished_at}
            if entry.outcome == CANCELLED:
                self._call_cancelled(event, run)
            else:  # call_rejected: the pool's queue was full
                self.events.add(run.run_id, _public(event, run))


def run_view(run: Run) -> dict[str, Any]:
    """A run as the API shows it: ``Run.to_dict()`` plus its SLO and timeout (seconds;
    null if not finite, which admission refuses)."""
    out = run.to_dict()
    out["slo_s"] = _seconds(run.deadline - run.arrival)
    out["timeout_s"] = _seconds(run.timeout_at - run.arrival)
    return out


def _seconds(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


def _call_event(kind: str, call: StageCall, pool: str, t: float) -> dict[str, Any]:
    return {"type": kind, "run_id": call.run_id, "call_id": call.call_id,
            "stage": call.stage.name, "attempt": call.attempt, "pool": pool,
            "t": round(max(0.0, t), 6)}


def _public(event: dict[str, Any], run: Run) -> dict[str, Any]:
    out = dict(event)
    out["t"] = round(max(0.0, event["t"] - run.arrival), 6)
    if "service_s" in out:
        out["service_s"] = round(out["service_s"] or 0.0, 6)
    return out

"""Discrete-event simulator: a virtual clock driving the same ``Controller``
(orchestrator, pools, schedulers, routers) as the asyncio runtime. Only the
clock, the engines (``SimEngine``) and the tools (the workload model) differ.
"""
from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any, Protocol

from cortex.controller import Action, CancelCall, Controller, RunFinished, StartCall
from cortex.core import CallResult, EngineRequest, ToolResult
from cortex.engine.sim import SimEngine
from cortex.orchestrator.outputs import llm_result
from cortex.orchestrator.run import Run, StageCall

_ARRIVE, _WAKE, _TOOL, _TICK = 0, 1, 2, 3


class SimWorkload(Protocol):
    def build_request(self, call_id: str, run_id: str, stage: str, attempt: int,
                      max_tokens: int) -> EngineRequest: ...

    def tool_result(self, run_id: str, stage: str, attempt: int,
                    quality_loss: float = 0.0) -> tuple[float, ToolResult]: ...


class Arrival(Protocol):
    run_id: str
    arrival: float

    @property
    def inputs(self) -> dict[str, Any]: ...


def sim_preparer(workload: SimWorkload) -> Callable[[StageCall], EngineRequest]:
    def prepare(call: StageCall) -> EngineRequest:
        assert call.stage.llm is not None
        return workload.build_request(call.call_id, call.run_id, call.stage.name, call.attempt,
                                      call.stage.llm.params.max_tokens)

    return prepare


class Simulator:
    """Args:
        controller: built with ``sim_preparer(workload)`` and views of ``engines``.
        engines: simulated engines by id.
        workload: tool outcomes and latencies.
        on_llm_submit: observer of every LLM request sent to an engine (oracle accounting).
    """

    def __init__(self, controller: Controller, engines: dict[str, SimEngine],
                 workload: SimWorkload, workflow: str,
                 on_llm_submit: Callable[[EngineRequest], None] | None = None) -> None:
        self.controller = controller
        self.engines = engines
        self.workload = workload
        self.workflow = workflow
        self.on_llm_submit = on_llm_submit
        self.now = 0.0
        self.finished: list[Run] = []
        self.num_events = 0
        self._events: list[tuple[float, int, int, Any]] = []
        self._seq = itertools.count()
        self._wake_at: dict[str, float] = {}
        self._running: dict[str, StageCall] = {}   # request id -> call on an engine
        self._quality_loss: dict[str, float] = {}  # run id -> knobs' loss on its latest answer
        self._tick_at: float | None = None
        self._num_ticks_queued = 0

    def run(self, arrivals: list[Arrival], slo_s: float) -> list[Run]:
        """Simulate the whole trace until every run is terminal."""
        for arrival in arrivals:
            self._push(arrival.arrival, _ARRIVE, arrival)
        while self._events:
            t, _, kind, payload = heapq.heappop(self._events)
            if kind == _WAKE and self._wake_at.get(payload) != t:
                continue  # superseded wake-up
            self.now = t
            self.num_events += 1
            self._execute(self._handle(kind, payload, slo_s))
            self._schedule_tick()
        return self.finished

    def _push(self, t: float, kind: int, payload: Any) -> None:
        self._num_ticks_queued += kind == _TICK
        heapq.heappush(self._events, (t, next(self._seq), kind, payload))

    def _handle(self, kind: int, payload: Any, slo_s: float) -> list[Action]:
        if kind == _ARRIVE:
            _, actions = self.controller.admit(self.workflow, payload.inputs, self.now,
                                               slo_s=slo_s, run_id=payload.run_id)
            return actions
        if kind == _WAKE:
            return self._engine_progress(payload)
        if kind == _TOOL:
            call, result = payload
            return self.controller.complete(call, CallResult(
                result.outcome, result.output, engine_id=call.engine_id), self.now)
        self._tick_at = None
        self._num_ticks_queued -= 1
        return self.controller.tick(self.now)

    def _engine_progress(self, engine_id: str) -> list[Action]:
        engine = self.engines[engine_id]
        self._wake_at.pop(engine_id, None)
        actions: list[Action] = []
        for done in engine.advance(self.now):
            call = self._running.pop(done.completion.request_id, None)
            if call is not None:
                result = llm_result(call.stage, done.completion)
                actions.extend(self.controller.complete(call, result, self.now))
        self._rewake(engine_id)
        return actions

    def _execute(self, actions: list[Action]) -> None:
        pending = list(actions)
        while pending:
            action = pending.pop(0)
            if isinstance(action, StartCall):
                self._start(action.call, action.engine_id)
            elif isinstance(action, CancelCall):
                self._cancel(action.call)
            elif isinstance(action, RunFinished):
                self.finished.append(action.run)
                self._quality_loss.pop(action.run.run_id, None)

    def _start(self, call: StageCall, engine_id: str) -> None:
        if not call.stage.is_llm:
            latency, result = self.workload.tool_result(
                call.run_id, call.stage.name, call.attempt,
                self._quality_loss.get(call.run_id, 0.0))
            self._push(self.now + latency, _TOOL, (call, result))
            return
        request = call.request
        assert request is not None
        if self.on_llm_submit is not None:
            self.on_llm_submit(request)
        self._quality_loss[call.run_id] = request.sim_quality_loss  # the run's latest LLM answer
        self._running[request.request_id] = call
        self.engines[engine_id].submit(request, self.now)
        self._rewake(engine_id)

    def _cancel(self, call: StageCall) -> None:
        if call.request is not None and call.engine_id in self.engines:
            self._running.pop(call.request.request_id, None)
            self.engines[call.engine_id].cancel(call.request.request_id, self.now)
            self._rewake(call.engine_id)
        # A cancelled tool call's completion event is ignored by the orchestrator.

    def _rewake(self, engine_id: str) -> None:
        t = self.engines[engine_id].next_event_time()
        if t is None:
            self._wake_at.pop(engine_id, None)
        elif self._wake_at.get(engine_id) != t:
            t = max(t, self.now)
            self._wake_at[engine_id] = t
            self._push(t, _WAKE, engine_id)

    def _schedule_tick(self) -> None:
        t = self.controller.orchestrator.next_timeout()
        step_at = self.controller.next_allocation_at()
        if step_at is not None and len(self._events) > self._num_ticks_queued:
            # periodic allocator steps, only while other work is pending
            t = max(step_at, self.now) if t is None else min(t, max(step_at, self.now))
        if t is not None and (self._tick_at is None or t < self._tick_at):
            self._tick_at = t
            self._push(t, _TICK, None)

"""The controller glues the orchestrator to the stage pools.

It is the one synchronous decision loop both runtimes drive: they report
events (a run arrives, a call finishes or fails, time passes) and get back
``Action``s to carry out (start a call on an engine, stop a call, report a
finished run). It owns the stage -> pool map and the engine -> pool map.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from cortex.allocator import Allocator, Decision, DecisionKind, is_malleable, pool_models
from cortex.allocator.types import AllocationContext
from cortex.core import ERROR, CallResult, EngineRequest, RunStatus
from cortex.engine.base import EngineView, served_models
from cortex.orchestrator.orchestrator import Orchestrator, Step
from cortex.orchestrator.run import Run, StageCall
from cortex.pool.placement import Layout
from cortex.pool.pool import LateOrder, StagePool
from cortex.pool.router import ROUTERS
from cortex.pool.scheduler import SCHEDULERS


class StartCall(NamedTuple):
    call: StageCall
    engine_id: str


class CancelCall(NamedTuple):
    call: StageCall


class RunFinished(NamedTuple):
    run: Run


Action = StartCall | CancelCall | RunFinished
Preparer = Callable[[StageCall], EngineRequest]


@dataclass(frozen=True, slots=True)
class ExecutorSlot:
    """A tool worker as the tool pool's router sees it."""

    engine_id: str
    max_concurrency: int = 1

    def cached_prefix_len(self, tokens: list[int], model: str | None = None) -> int:
        return 0


def retokenize_for_model(request: EngineRequest, views: list[EngineView]) -> None:
    """A knob switched the request to another model: its token ids (which the router
    matches against engines' caches) must be that model's. Tokenizes with the first
    engine that lists the model in ``models``; pre-tokenized requests (simulated
    workloads) and pools of engines that serve any name are left as they are."""
    if request.messages is None and request.prompt is None:
        return
    for view in views:
        if request.model in (served_models(view) or ()):
            request.prompt_tokens = view.tokenize(request)
            return


class Controller:
    """Args:
        orchestrator: owns runs.
        layout: pools and which stages they serve.
        engines: engine views per pool name (tool pools get ``ExecutorSlot``s if absent).
        prepare: builds the engine request (with prompt token ids) for an LLM call.
        max_queue: bounded queue length of every pool.
        load_bound: prefix-affinity load bound.
        allocator: moves engines between LLM pools at run time; None: a default
            ``Allocator`` when the layout's policy is malleable, else a static split.
        late: slack-ordered pools serve calls that can no longer meet their SLO after
            every call that still can (``LateOrder``); None: strict least-slack order.
    """

    def __init__(self, orchestrator: Orchestrator, layout: Layout,
                 engines: dict[str, list[EngineView]], prepare: Preparer,
                 max_queue: int = 1024, load_bound: int = 2,
                 allocator: Allocator | None = None,
                 late: LateOrder | None = None, hold_for_memory: bool = False) -> None:
        self.orchestrator = orchestrator
        self.layout = layout
        self.prepare = prepare
        self.pools: dict[str, StagePool] = {}
        self.engine_pool: dict[str, str] = {}
        for spec in layout.pools:
            router = ROUTERS.get(spec.router)(load_bound=load_bound)
            pool = StagePool(spec.name, spec.stages, SCHEDULERS.get(spec.scheduler), router,
                             max_queue=max_queue,
                             late=late if spec.scheduler == "slack" else None,
                             hold_for_memory=hold_for_memory)
            views = engines.get(spec.name) or [
                ExecutorSlot(f"{spec.name}-{i}") for i in range(spec.num_engines)]
            for view in views:
                pool.add_engine(view)
                self.engine_pool[view.engine_id] = spec.name
            self.pools[spec.name] = pool
        self._stage_pool = {s: p.name for p in layout.pools for s in p.stages}
        if allocator is None and is_malleable(layout.policy):
            allocator = Allocator()
        self.allocator = allocator
        if allocator is not None:
            views = {v.engine_id: v for vs in engines.values() for v in vs}
            allocator.attach(self.pools, pool_models(
                layout, orchestrator.workflows.values(), engines), views)

    # ---- events --------------------------------------------------------------
    def admit(self, workflow: str, inputs: dict[str, Any], now: float, **kwargs: Any
              ) -> tuple[Run, list[Action]]:
        """Admit a run (raises KeyError/ValueError on bad input, before any state changes)."""
        run, step = self.orchestrator.admit(workflow, inputs, now, **kwargs)
        return run, self._apply(step, now)

    def complete(self, call: StageCall, result: CallResult, now: float) -> list[Action]:
        if not self.is_live(call):
            return []  # cancelled earlier; its slot was freed then
        pool = self.pools[call.pool]
        usage = result.usage
        pool.finished(call, usage.prompt_tokens, usage.cached_prompt_tokens, usage.service_s)
        if self.allocator is not None:
            self.allocator.observe(call, usage, now)
        return self._apply(self.orchestrator.complete(call, result, now), now)

    def fail_call(self, call: StageCall, error: str, now: float) -> list[Action]:
        """An engine failed ``call``: mark the engine unhealthy and retry the call
        once on another healthy engine of the same pool; otherwise the call
        fails with the reason (and the workflow decides what an error means)."""
        if not self.is_live(call):
            return []
        pool = self.pools[call.pool]
        failed_on = call.engine_id
        pool.finished(call, 0, 0, 0.0)
        if call.stage.is_llm:
            pool.set_healthy(failed_on, False)
        run = self.orchestrator.runs.get(call.run_id)
        can_retry = (call.num_retries == 0 and run is not None and call.call_id in run.inflight
                     and any(e != failed_on for e in pool.healthy_engines()))
        if can_retry:
            call.started_at, call.engine_id = None, ""
            if pool.submit(call, call.queued_at):  # keeps its place in line
                call.num_retries += 1
                return self._dispatch(now)
            call.engine_id = failed_on  # the queue was full: no retry after all
        why = f"engine {failed_on or '?'} failed: {error}"
        if call.num_retries:
            why += " (after one retry)"
        result = CallResult(ERROR, {}, engine_id=failed_on, error=why)
        return self._apply(self.orchestrator.complete(call, result, now), now)

    def set_engine_health(self, engine_id: str, healthy: bool, now: float) -> list[Action]:
        self.pools[self.engine_pool[engine_id]].set_healthy(engine_id, healthy)
        return self._dispatch(now) if healthy else []

    def cancel_run(self, run_id: str, now: float, reason: str = "cancelled by client",
                   status: RunStatus = RunStatus.CANCELLED) -> list[Action]:
        return self._apply(self.orchestrator.finish(run_id, status, reason, now), now)

    def tick(self, now: float) -> list[Action]:
        """Time out overdue runs, run the allocator when its step is due, then dispatch."""
        actions = self._apply(self.orchestrator.expire(now), now)
        if self.allocator is not None and self.allocator.is_due(now):
            self._reassigned(self.allocator.step(now))
            actions.extend(self._dispatch(now))
        return actions

    # ---- allocation ------------------------------------------------------------
    def next_allocation_at(self) -> float | None:
        """When ``tick`` should next run for the allocator (None: no allocator)."""
        return self.allocator.next_step_at if self.allocator is not None else None

    def snapshots(self, now: float) -> AllocationContext:
        """The LLM pools' loads as the allocation policy sees them (needs an allocator)."""
        if self.allocator is None:
            raise RuntimeError("this controller has no allocator (policy is static)")
        return self.allocator.context(now, close=False)

    def begin_move(self, engine_id: str, to_pool: str, now: float) -> list[Action]:
        """Move an engine by hand (drain, then reassign). Raises ValueError if refused."""
        if self.allocator is None:
            raise RuntimeError("this controller has no allocator (policy is static)")
        source = self.engine_pool.get(engine_id, "")
        decision = Decision(DecisionKind.MOVE, engine_id, source, to_pool, "by hand")
        if not self.allocator.begin(decision, now):
            raise ValueError(self.allocator.refused[-1][2])
        return self._dispatch(now)

    def _reassigned(self, changes: list[tuple[str, str]]) -> None:
        for engine_id, pool in changes:
            if pool:
                self.engine_pool[engine_id] = pool
            else:
                self.engine_pool.pop(engine_id, None)

    # ---- internals -------------------------------------------------------------
    def _apply(self, step: Step, now: float) -> list[Action]:
        actions: list[Action] = []
        pending = [step]
        while pending:
            step = pending.pop()
            for call in step.cancelled:
                actions.extend(self._cancel(call))
            actions.extend(RunFinished(run) for run in step.finished)
            for call in step.calls:
                rejection = self._enqueue(call, now)
                if rejection is not None:
                    pending.append(rejection)
        actions.extend(self._dispatch(now))
        return actions

    def _enqueue(self, call: StageCall, now: float) -> Step | None:
        pool = self.pools[self._stage_pool[call.stage.name]]
        if call.stage.is_llm:
            call.request = self.prepare(call)
            model = call.request.model
            self.orchestrator.adjust_request(call)
            if call.request.model != model:
                retokenize_for_model(call.request, pool.views())
        if pool.submit(call, now):
            if self.allocator is not None:
                self.allocator.observe_submit(call, now)
            return None
        reason = (f"admission control: pool {pool.name!r} queue is full "
                  f"({pool.max_queue} calls) at stage {call.stage.name!r}")
        call.pool = pool.name  # for its trace entry: the pool that refused it
        return self.orchestrator.reject(call, reason, now)

    def _cancel(self, call: StageCall) -> list[Action]:
        pool = self.pools.get(call.pool)
        if pool is None or pool.remove(call.call_id):
            return []
        if call.started_at is not None:
            pool.finished(call, 0, 0, 0.0)
            return [CancelCall(call)]
        return []

    def _dispatch(self, now: float) -> list[Action]:
        if self.allocator is not None:
            self._reassigned(self.allocator.settle(now))
        return [StartCall(d.call, d.engine_id)
                for pool in self.pools.values() for d in pool.dispatch(now)]

    def is_live(self, call: StageCall) -> bool:
        run = self.orchestrator.runs.get(call.run_id)
        return run is not None and call.call_id in run.inflight

    def queue_depth(self) -> int:
        return sum(p.queue_depth for p in self.pools.values())

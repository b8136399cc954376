"""The service behind the HTTP API: lifecycle, admission and run bookkeeping.

Owns: the deployment (started in the background, so the server can answer
``/readyz`` while engines load), the service state, which runs are retained
for clients to read, and the drain on shutdown. Runs themselves stay owned by
the orchestrator; the service only reads them and asks the runtime to act.
The HTTP layer translates; it makes no decisions.
"""
from __future__ import annotations

import asyncio
import enum
import math
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, NamedTuple

from cortex.config import CortexConfig
from cortex.core import RunStatus
from cortex.engine.base import BaseEngine
from cortex.orchestrator.run import Run
from cortex.runtime.realtime import RealtimeRuntime
from cortex.server.deployment import Deployment, DirectCall, build_deployment
from cortex.server.errors import Conflict, InvalidRequest, NotFound, Overloaded, Unavailable
from cortex.server.events import RunEvents
from cortex.server.metrics import ServerMetrics
from cortex.server.observer import RuntimeObserver
from cortex.server.stats import LiveStats


class ServiceState(str, enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(slots=True)
class Submission:
    """A run to admit. ``direct`` is set for a single call to a pool (OpenAI endpoints)."""

    workflow: str
    inputs: dict[str, Any]
    slo_s: float | None = None
    timeout_s: float | None = None
    direct: DirectCall | None = None


class DrainResult(NamedTuple):
    num_finished: int   # runs that ended on their own within the grace period
    num_cancelled: int  # runs cancelled when it expired


class CortexService:
    """Args:
        cfg: the deployment config.
        engines: engines to use instead of the config's (tests, embedding), not yet
            started: ``start`` starts them, as it would the config's.
        max_retained_runs: finished runs kept for clients to read (oldest forgotten first).
        sample_every_s: period of the dashboard's queue-depth history.
    """

    def __init__(self, cfg: CortexConfig, engines: dict[str, BaseEngine] | None = None,
                 max_retained_runs: int = 10_000, sample_every_s: float = 1.0) -> None:
        from cortex.server.views import gauge_rows

        self.cfg = cfg
        self.state = ServiceState.STARTING
        self.start_error: BaseException | None = None
        self.started_at = time.monotonic()
        self.events = RunEvents()
        self.stats = LiveStats()
        self.metrics = ServerMetrics(lambda: gauge_rows(self))
        self.deployment: Deployment | None = None
        self._engines = engines
        self._max_retained = max_retained_runs
        self._sample_every_s = sample_every_s
        self._active: dict[str, None] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._sampler: asyncio.Task[None] | None = None

    # ---- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        """Start engines and pools; on failure the state becomes ``failed`` and re-raises."""
        try:
            observer = RuntimeObserver(self.events, self.stats, self.metrics,
                                       lambda: self.runtime.controller.orchestrator.runs,
                                       time.monotonic, self._forget_later)
            engines = self._engines
            if engines is not None:
                await asyncio.gather(*(e.start() for e in engines.values()))
            self.deployment = await build_deployment(self.cfg, engines, observer.on_queue)
        except BaseException as exc:
            self.state, self.start_error = ServiceState.FAILED, exc
            raise
        self.deployment.runtime.listeners.append(observer)
        self._sampler = asyncio.create_task(self._sample_loop())
        if self.state is ServiceState.STARTING:
            self.state = ServiceState.READY

    async def drain(self, grace_s: float) -> DrainResult:
        """Stop admitting, give in-flight runs ``grace_s`` to finish, cancel the rest."""
        if self.state in (ServiceState.STARTING, ServiceState.READY):
            self.state = ServiceState.DRAINING
        if self.deployment is None:
            return DrainResult(0, 0)
        runtime = self.runtime
        active = list(self._active)
        if active and grace_s > 0:
            waits = [asyncio.ensure_future(runtime.wait(rid)) for rid in active]
            _, pending = await asyncio.wait(waits, timeout=grace_s)
            for fut in pending:
                fut.cancel()
        remaining = list(self._active)
        reason = f"server shutting down: grace period of {grace_s:g} s expired"
        for run_id in remaining:
            runtime.cancel(run_id, reason, RunStatus.CANCELLED)
        return DrainResult(len(active) - len(remaining), len(remaining))

    async def close(self) -> None:
        """Cancel what is still running and release engines."""
        if self._sampler is not None:
            self._sampler.cancel()
        if self.deployment is not None:
            for run_id in list(self._active):
                self.runtime.cancel(run_id, "server stopped", RunStatus.CANCELLED)
            await self.runtime.close()
        if self.state is not ServiceState.FAILED:
            self.state = ServiceState.STOPPED

    @property
    def runtime(self) -> RealtimeRuntime:
        return self._deployment().runtime

    @property
    def num_active(self) -> int:
        """Admitted runs not yet in a terminal state."""
        return len(self._active)

    def uptime_s(self) -> float:
        return time.monotonic() - self.started_at

    def is_ready(self) -> tuple[bool, str]:
        """Ready = engines up, every pool has a healthy engine, and runs are admitted."""
        if self.state is not ServiceState.READY:
            return False, f"server is {self.state.value}"
        for pool in self.runtime.controller.pools.values():
            if not pool.healthy_engines():
                return False, f"pool {pool.name!r} has no healthy engine"
        return True, "ready"

    # ---- runs ----------------------------------------------------------------
    def resolve_model(self, model: str) -> tuple[str, bool]:
        """Map an OpenAI ``model`` to (workflow name, is a pool). Raises NotFound."""
        deployment = self._deployment()
        if model in deployment.workflows:
            return model, False
        if model in deployment.pool_workflows:
            return deployment.pool_workflows[model], True
        known = ", ".join([*deployment.workflows, *deployment.pool_workflows])
        raise NotFound(f"model {model!r} is neither a workflow nor a pool (known: {known})",
                       param="model", code="model_not_found")

    def submit(self, sub: Submission) -> Run:
        """Admit a run.

        Raises:
            Unavailable: starting or draining.
            NotFound: unknown workflow.
            InvalidRequest: a missing input (``param`` names it), or an SLO or timeout
                that is not a finite positive number of seconds.
            Overloaded: a pool the workflow uses has a full queue (or the run was rejected).
        """
        for name, value in (("slo_ms", sub.slo_s), ("timeout_ms", sub.timeout_s)):
            if value is not None and not (isinstance(value, (int, float)) and not
                                          isinstance(value, bool) and math.isfinite(value)
                                          and value > 0):
                shown = value * 1000.0 if isinstance(value, (int, float)) else value
                raise InvalidRequest(f"{name} must be a finite number > 0, got {shown!r}",
                                     param=name, code="invalid_value")
        self._check_admitting()
        deployment = self._deployment()
        wf = deployment.runtime.controller.orchestrator.workflows.get(sub.workflow)
        if wf is None or (sub.direct is None and sub.workflow not in deployment.workflows):
            raise NotFound(f"unknown workflow {sub.workflow!r} (known: "
                           f"{', '.join(deployment.workflows)})", param="workflow")
        missing = [name for name in wf.inputs if name not in sub.inputs]
        if missing:
            raise InvalidRequest(f"workflow {wf.name!r} needs input {missing[0]!r} "
                                 f"(inputs: {', '.join(wf.inputs)})", param=f"inputs.{missing[0]}")
        self._check_capacity({s for s in wf.stages})
        return self._admit(deployment, sub)

    def _admit(self, deployment: Deployment, sub: Submission) -> Run:
        run_id = f"run-{secrets.token_hex(6)}"
        self.events.open(run_id, {"type": "run_admitted", "run_id": run_id,
                                  "workflow": sub.workflow, "t": 0.0})
        self._active[run_id] = None
        if sub.direct is not None:
            deployment.direct_calls[run_id] = sub.direct
        try:
            run = deployment.runtime.submit(sub.workflow, sub.inputs, slo_s=sub.slo_s,
                                            timeout_s=sub.timeout_s, run_id=run_id)
        except (KeyError, ValueError) as exc:
            self._active.pop(run_id, None)
            self.events.forget(run_id)
            deployment.direct_calls.pop(run_id, None)
            raise InvalidRequest(str(exc.args[0] if exc.args else exc)) from None
        if run.status is RunStatus.REJECTED:
            self.metrics.http_rejected.labels("run_rejected").inc()
            raise Overloaded(f"{run.reason} (run {run_id} rejected)", retry_after_s=1)
        return run

    def get_run(self, run_id: str) -> Run:
        run = self._deployment().runtime.controller.orchestrator.runs.get(run_id)
        if run is None or run_id not in self.events:
            raise NotFound(f"unknown run {run_id!r} (finished runs are kept for the last "
                           f"{self._max_retained} runs)", param="run_id")
        return run

    def list_runs(self, limit: int = 50, status: str | None = None) -> list[Run]:
        ids = [*reversed(self._active), *reversed(self._finished)]
        runs = [self.get_run(rid) for rid in ids if rid in self.events]
        return [r for r in runs if status is None or r.status.value == status][:limit]

    async def wait(self, run_id: str, timeout_s: float | None = None) -> Run:
        """The run once terminal (``timeout_s``: asyncio.TimeoutError if still running)."""
        run = self.get_run(run_id)
        if run.status.is_terminal:
            return run
        return await asyncio.wait_for(self.runtime.wait(run_id), timeout_s)

    def cancel(self, run_id: str, reason: str = "cancelled by client") -> Run:
        """Cancel a run and stop its in-flight calls. Raises Conflict if already terminal."""
        run = self.get_run(run_id)
        if run.status.is_terminal:
            raise Conflict(f"run {run_id} already ended: {run.status.value}", param="run_id",
                           code="run_finished")
        self.runtime.cancel(run_id, reason, RunStatus.CANCELLED)
        return run

    # ---- internals -------------------------------------------------------------
    def _deployment(self) -> Deployment:
        if self.deployment is None:
            raise Unavailable(f"the server is {self.state.value}: engines are not up",
                              code=self.state.value, retry_after_s=1)
        return self.deployment

    def _check_admitting(self) -> None:
        if self.state is ServiceState.READY:
            return
        self.metrics.http_rejected.labels(self.state.value).inc()
        if self.state is ServiceState.STARTING:
            raise Unavailable("the server is starting: engines are not up yet",
                              code="starting", retry_after_s=1)
        raise Unavailable(f"the server is {self.state.value} and admits no new runs",
                          code=self.state.value)

    def _check_capacity(self, stages: set[str]) -> None:
        controller = self.runtime.controller
        for pool in controller.pools.values():
            if set(pool.stages) & stages and not pool.can_admit():
                self.metrics.http_rejected.labels("queue_full").inc()
                raise Overloaded(f"admission control: pool {pool.name!r} queue is full "
                                 f"({pool.queue_depth} of {pool.max_queue} calls); retry later",
                                 retry_after_s=_retry_after_s(pool))

    def _forget_later(self, run_id: str) -> None:
        self._active.pop(run_id, None)
        self._finished[run_id] = None
        if self.deployment is not None:
            self.deployment.direct_calls.pop(run_id, None)
        while len(self._finished) > self._max_retained:
            old, _ = self._finished.popitem(last=False)
            self.events.forget(old)
            if self.deployment is not None:
                self.deployment.runtime.controller.orchestrator.forget(old)

    async def _sample_loop(self) -> None:
        from cortex.server.views import history_point

        while True:
            self.stats.add_history(history_point(self))
            await asyncio.sleep(self._sample_every_s)


def _retry_after_s(pool: Any) -> float:
    """Roughly how long until the pool's queue has room: one mean service time per
    queued call, spread over its engines' capacity; 1 to 60 s."""
    stats = pool.stats
    mean_s = stats.busy_s / stats.num_calls if stats.num_calls else 1.0
    capacity = max(1, pool.snapshot().capacity)
    return min(60.0, max(1.0, pool.queue_depth * mean_s / capacity))

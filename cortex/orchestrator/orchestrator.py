"""The workflow-aware orchestrator: admits runs, walks their graphs, prices
each ready call by its run's SLO slack, and ends every run in exactly one
terminal state. Synchronous and I/O-free; time is an argument.
"""
from __future__ import annotations

import heapq
import itertools
from typing import Any, NamedTuple

from cortex.allocator.knobs import KnobSet, apply_to_request, edge_limit, turn, turned
from cortex.core import CANCELLED, ERROR, OK, REJECTED, CallResult, RunStatus, TraceEntry, Usage
from cortex.orchestrator.estimates import StageEstimator
from cortex.orchestrator.run import FanoutState, Run, StageCall
from cortex.workflow.graph import END, JOIN_FIRST_OK, CompiledWorkflow, Stage
from cortex.workflow.template import render


class Step(NamedTuple):
    """What the runtime must do after an orchestrator decision."""

    calls: list[StageCall]       # new calls to enqueue
    cancelled: list[StageCall]   # in-flight or queued calls to stop
    finished: list[Run]          # runs that reached a terminal state


def _empty() -> Step:
    return Step([], [], [])


DEFAULT_TIMEOUT_FACTOR = 5.0  # a run times out once this many times its SLO has passed


class Orchestrator:
    """Owns every run's state.

    Args:
        workflows: compiled workflows by name.
        estimator: online stage estimates (shared with placement/benchmarks).
        default_slo_s: SLO for runs that name none and whose workflow sets none.
        timeout_factor: a run is ``timed_out`` once ``timeout_factor * slo`` has passed
            (unless its admission names a timeout); its queued and running calls are
            cancelled, so a run that has long missed its SLO stops taking capacity.
        knobs: workflow name -> knobs to turn (cheapest first) for a run entering a
            stage with negative slack; the turns are recorded in ``run.meta``.
    """

    def __init__(self, workflows: dict[str, CompiledWorkflow],
                 estimator: StageEstimator | None = None, default_slo_s: float = 30.0,
                 timeout_factor: float = DEFAULT_TIMEOUT_FACTOR,
                 knobs: dict[str, KnobSet] | None = None) -> None:
        self.workflows = workflows
        self.knobs = knobs or {}
        self.estimator = estimator or StageEstimator()
        self.default_slo_s = default_slo_s
        self.timeout_factor = timeout_factor
        self.runs: dict[str, Run] = {}
        self._timeouts: list[tuple[float, str]] = []
        self._ids = itertools.count()

    # ---- admission -------------------------------------------------------
    def admit(self, workflow: str, inputs: dict[str, Any], now: float,
              slo_s: float | None = None, timeout_s: float | None = None,
              run_id: str | None = None) -> tuple[Run, Step]:
        """Create a run and return its first calls.

        Raises:
            KeyError: unknown workflow.
            ValueError: missing inputs, bad SLO, or duplicate run id.
        """
        wf = self.workflows.get(workflow)
        if wf is None:
            raise KeyError(f"unknown workflow {workflow!r} (known: {', '.join(self.workflows)})")
        missing = [name for name in wf.inputs if name not in inputs]
        if missing:
            raise ValueError(f"workflow {workflow!r} needs inputs: {', '.join(missing)}")
        slo = slo_s or wf.default_slo_s or self.default_slo_s
        if slo <= 0:
            raise ValueError(f"slo must be positive, got {slo}")
        run_id = run_id or f"run-{next(self._ids)}"
        if run_id in self.runs:
            raise ValueError(f"duplicate run id {run_id!r}")
        timeout_at = now + (timeout_s if timeout_s is not None else slo * self.timeout_factor)
        run = Run(run_id, wf, dict(inputs), now, now + slo, timeout_at,
                  context=dict(inputs))
        self.runs[run_id] = run
        heapq.heappush(self._timeouts, (timeout_at, run_id))
        return run, self._enter(run, wf.entry, now)

    # ---- progress ----------------------------------------------------------
    def complete(self, call: StageCall, result: CallResult, now: float) -> Step:
        """Record a finished call and advance its run."""
        run = self.runs.get(call.run_id)
        if run is None or call.call_id not in run.inflight:
            return _empty()  # cancelled earlier: its late result is ignored
        del run.inflight[call.call_id]
        self._record(run, call, result, now)
        if run.status.is_terminal:
            return _empty()
        fan = run.fanouts.get(call.stage.name)
        if fan is None:
            return self._advance(run, call.stage, result, now)
        return self._join(run, call.stage, fan, call, result, now)

    def finish(self, run_id: str, status: RunStatus, reason: str, now: float) -> Step:
        """End a run from outside (rejected by a pool, cancelled by a client, timed out)."""
        run = self.runs.get(run_id)
        if run is None or run.status.is_terminal:
            return _empty()
        cancelled = list(run.inflight.values())
        run.inflight.clear()
        self._record_cancelled(run, cancelled, now)
        self._terminate(run, status, reason, now)
        return Step([], cancelled, [run])

    def reject(self, call: StageCall, reason: str, now: float) -> Step:
        """A pool refused ``call`` (its queue is full): the call stays in the trace,
        outcome ``rejected``, and its run ends ``REJECTED`` with ``reason``."""
        run = self.runs.get(call.run_id)
        if run is None or run.status.is_terminal:
            return _empty()
        run.inflight.pop(call.call_id, None)
        self._record_cancelled(run, [call], now, REJECTED)
        return self.finish(call.run_id, RunStatus.REJECTED, reason, now)

    def expire(self, now: float) -> Step:
        """Time out every run whose timeout has passed."""
        out = _empty()
        while self._timeouts and self._timeouts[0][0] <= now:
            _, run_id = heapq.heappop(self._timeouts)
            step = self.finish(run_id, RunStatus.TIMED_OUT, "run exceeded its timeout", now)
            out.cancelled.extend(step.cancelled)
            out.finished.extend(step.finished)
        return out

    def next_timeout(self) -> float | None:
        while self._timeouts and self.runs[self._timeouts[0][1]].status.is_terminal:
            heapq.heappop(self._timeouts)
        return self._timeouts[0][0] if self._timeouts else None

    def forget(self, run_id: str) -> None:
        """Drop a terminal run's state (long-running servers call this after reporting)."""
        run = self.runs.get(run_id)
        if run is not None and run.status.is_terminal:
            del self.runs[run_id]

    # ---- internals ---------------------------------------------------------
    def _record(self, run: Run, call: StageCall, result: CallResult, now: float) -> None:
        started = call.started_at if call.started_at is not None else now
        run.trace.append(TraceEntry(
            call.call_id, call.stage.name, call.attempt, result.engine_id or call.engine_id,
            call.pool, result.outcome, call.queued_at, started, now, result.usage, result.error))
        service = result.usage.service_s or max(0.0, now - started)
        self.estimator.observe(run.workflow, call.stage.name, service, result.outcome)

    @staticmethod
    def _record_cancelled(run: Run, calls: list[StageCall], now: float,
                          outcome: str = CANCELLED) -> None:
        """Keep calls stopped before they finished in the trace, outcome ``cancelled``
        (or ``rejected``): engine and service time so far if started, else the queue
        wait until now."""
        for call in calls:
            started = call.started_at if call.started_at is not None else now
            run.trace.append(TraceEntry(
                call.call_id, call.stage.name, call.attempt, call.engine_id, call.pool,
                outcome, call.queued_at, started, now, Usage(service_s=max(0.0, now - started))))

    def _join(self, run: Run, stage: Stage, fan: FanoutState, call: StageCall,
              result: CallResult, now: float) -> Step:
        fan.pending.discard(call.call_id)
        fan.results.append(result)
        if fan.joined:
            return _empty()
        if stage.join == JOIN_FIRST_OK and result.outcome == OK:
            fan.joined = True
            losers = [c for c in run.inflight.values() if c.call_id in fan.pending]
            for loser in losers:
                del run.inflight[loser.call_id]
            self._record_cancelled(run, losers, now)
            step = self._advance(run, stage, result, now)
            return Step(step.calls, losers + step.cancelled, step.finished)
        if fan.pending:
            return _empty()
        fan.joined = True
        return self._advance(run, stage, self._joined_result(stage, fan.results), now)

    @staticmethod
    def _joined_result(stage: Stage, results: list[CallResult]) -> CallResult:
        if stage.join == JOIN_FIRST_OK:
            return results[-1]  # none was ok: the last failure speaks for the stage
        bad = next((r for r in results if r.outcome != OK), None)
        return CallResult(outcome=bad.outcome if bad else OK,
                          output={"results": [r.output for r in results]},
                          error=bad.error if bad else "")

    def _advance(self, run: Run, stage: Stage, result: CallResult, now: float) -> Step:
        run.context[stage.name] = result.output
        if stage.output_as:
            run.context[stage.output_as] = result.output
        edge = next((e for e in stage.edges if e.matches(result.outcome)), None)
        if edge is None:
            return self._end_without_edge(run, stage, result, now)
        limit = edge_limit(run, edge)  # lowered by a turned retry-budget knob
        if limit is not None:
            taken = run.edge_counts.get(edge.edge_id, 0)
            if taken >= limit:
                return self._fail(run, f"retry budget exhausted: {edge.edge_id} taken {taken} "
                                       f"times (max_traversals={limit})", now)
            run.edge_counts[edge.edge_id] = taken + 1
        if edge.target == END:
            return self._succeed(run, now)
        return self._enter(run, edge.target, now)

    def _end_without_edge(self, run: Run, stage: Stage, result: CallResult, now: float) -> Step:
        if result.outcome == ERROR:
            return self._fail(run, f"stage {stage.name!r} failed: {result.error or 'error'}", now)
        if stage.edges:
            return self._fail(run, f"stage {stage.name!r} returned {result.outcome!r} and no "
                                   "edge handles it", now)
        return self._succeed(run, now)

    def _succeed(self, run: Run, now: float) -> Step:
        if run.inflight:  # e.g. an `all` sibling branch still running elsewhere
            return _empty()
        self._terminate(run, RunStatus.SUCCEEDED, "", now)
        return Step([], [], [run])

    def _fail(self, run: Run, reason: str, now: float) -> Step:
        cancelled = list(run.inflight.values())
        run.inflight.clear()
        self._record_cancelled(run, cancelled, now)
        self._terminate(run, RunStatus.FAILED, reason, now)
        return Step([], cancelled, [run])

    def _terminate(self, run: Run, status: RunStatus, reason: str, now: float) -> None:
        run.status, run.reason, run.finished_at = status, reason, now
        # the workflow's output stage; none declared (several stages can end a run): the
        # stage that finished last, i.e. the one the run ended at when it succeeded
        ran = [t.stage for t in run.trace if t.ran]
        out = run.workflow.output or (ran[-1] if ran else None)
        run.output = run.context.get(out) if out else None

    def _enter(self, run: Run, stage_name: str, now: float) -> Step:
        stage = run.workflow.stages[stage_name]
        try:
            args = self._render_args(run, stage)
        except KeyError as exc:
            return self._fail(run, f"stage {stage_name!r}: {exc.args[0]}", now)
        attempt = run.visits.get(stage_name, 0) + 1
        run.visits[stage_name] = attempt
        run.fanouts.pop(stage_name, None)
        expected = self.estimator.service_s(run.workflow, stage_name)
        slack_key = run.deadline - self.estimator.remaining_s(run.workflow, stage_name)
        if slack_key - now < 0:
            self._turn_knob(run, stage_name, slack_key - now, now)
        calls = []
        for i in range(stage.fanout):
            call_id = f"{run.run_id}/{stage_name}/{attempt}/{i}"
            call = StageCall(call_id, run.run_id, stage, attempt, i, args, run.deadline,
                             expected, slack_key, queued_at=now)
            run.inflight[call_id] = call
            calls.append(call)
        if stage.fanout > 1:
            run.fanouts[stage_name] = FanoutState({c.call_id for c in calls})
        return Step(calls, [], [])

    def _turn_knob(self, run: Run, stage: str, slack_s: float, now: float) -> None:
        knobs = self.knobs.get(run.workflow.name)
        knob = knobs.next_to_turn(run, stage) if knobs is not None else None
        if knob is not None:
            turn(run, knob, slack_s, now)

    def adjust_request(self, call: StageCall) -> None:
        """Apply the run's turned knobs (model, max tokens) to a prepared call."""
        run = self.runs.get(call.run_id)
        if run is not None and turned(run):
            apply_to_request(run, call)

    @staticmethod
    def _render_args(run: Run, stage: Stage) -> dict[str, Any]:
        if stage.llm is None:
            return render(stage.args, run.context)
        return {"system": render(stage.llm.system, run.context) if stage.llm.system else "",
                "user": render(stage.llm.user, run.context)}

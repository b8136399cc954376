"""The allocator: owner of the engine -> pool assignment of LLM pools.

Every ``interval_s`` it snapshots the pools (``LoadMonitor``), asks its policy
for decisions and carries out the valid ones with a two-phase move:

1. **drain**: the engine is marked draining in its pool, so the router sends it
   nothing new; its in-flight calls finish where they are;
2. **reassign**: once it has no call in flight (``settle``, run before every
   dispatch) it leaves the old pool and joins the new one -- with its cache as
   it is, i.e. cold for the new stage's prompts; the pools' hit rates and the
   ``cold`` counters show it.

No call is moved, so none is lost or duplicated. A decision that would leave a
pool without an active engine, or that names an engine not where the policy
thinks it is, is refused and counted. Synchronous; time is an argument.
"""
from __future__ import annotations

from typing import Any

from cortex.allocator.policy import BaseAllocationPolicy, build_policy
from cortex.allocator.scaling import BaseEngineProvider
from cortex.allocator.signals import LoadMonitor, kv_live, kv_usage
from cortex.allocator.state import AllocatorConfig, Assignment, ColdStats
from cortex.allocator.timeline import Timeline
from cortex.allocator.types import (
    AllocationContext,
    Decision,
    DecisionKind,
    EngineLoad,
    MoveRecord,
    PoolLoad,
)
from cortex.core import Usage
from cortex.engine.base import EngineView, num_waiting
from cortex.orchestrator.run import StageCall
from cortex.pool.pool import StagePool

Change = tuple[str, str]  # (engine id, pool it now serves; "" once stopped)


class Allocator:
    """Args:
        config: policy name/options and timing.
        provider: starts/stops engines (scale out/in); None: fixed engine set.
        policy: a policy instance (overrides ``config.policy``; tests).
    """

    def __init__(self, config: AllocatorConfig | None = None,
                 provider: BaseEngineProvider | None = None,
                 policy: BaseAllocationPolicy | None = None) -> None:
        self.config = config or AllocatorConfig()
        self.policy = policy or build_policy(self.config.policy, self.config.policy_options)
        self.provider = provider
        self.monitor = LoadMonitor(self.config.load_alpha, self.config.cost_window_s,
                                   workflow_demand=self.config.workflow_demand)
        self.timeline = Timeline()
        self.records: list[MoveRecord] = []
        self.refused: list[tuple[float, Decision, str]] = []
        self.cold: dict[str, ColdStats] = {}
        self.pools: dict[str, StagePool] = {}
        self.models: dict[str, str] = {}
        self.assignment: dict[str, Assignment] = {}
        self._state: Any = self.policy.initial_state()
        self._next_at = 0.0
        self._starting: dict[str, MoveRecord] = {}
        self._draining: set[str] = set()   # engines with a pending decision
        self._emptied: set[str] = set()    # pools whose last engine was lent

    # ---- set-up --------------------------------------------------------------
    def attach(self, pools: dict[str, StagePool], models: dict[str, str],
               views: dict[str, EngineView] | None = None) -> None:
        """Take over the LLM pools named in ``models`` (pool -> model) as placed.
        The first ``step`` (due at once) only starts the load windows.

        Args:
            views: engine id -> view, for signals such as KV usage (optional).
        Raises:
            ValueError: the policy's options name a pool that is not here.
        """
        self.policy.check_pools(models)
        self.pools, self.models = pools, dict(models)
        views = views or {}
        for name in models:
            for engine_id in pools[name].engine_ids:  # placed, not moved: no dwell owed
                self.assignment[engine_id] = Assignment(engine_id, name, name, float("-inf"),
                                                        views.get(engine_id))
        self._next_at = float("-inf")

    # ---- time ----------------------------------------------------------------
    @property
    def next_step_at(self) -> float:
        return self._next_at

    def is_due(self, now: float) -> bool:
        return now >= self._next_at

    def step(self, now: float) -> list[Change]:
        """One policy step: admit started engines, decide, begin the moves.

        Returns the engines that joined a pool (scale-out) for the caller's map.
        """
        first = self._next_at == float("-inf")
        self._next_at = now + self.config.interval_s
        if first:
            for name in self.models:
                self.monitor.open(name, now)
            self._state = self.policy.start(self._state, now)
            return []
        changes = self._admit_started(now)
        ctx = self.context(now)
        decisions, self._state = self.policy.decide(ctx, self._state)
        for decision in decisions:
            self.begin(decision, now)
        self.timeline.record(ctx, len(self.records))
        return changes

    def context(self, now: float, close: bool = True) -> AllocationContext:
        """Snapshot every managed pool; ``close`` ends the monitor's windows (a
        policy step), otherwise the snapshot is only a look."""
        lent: dict[str, list[str]] = {name: [] for name in self.models}
        for a in self.assignment.values():
            if a.pool != a.home:
                lent[a.home].append(a.engine_id)
        loads = tuple(self._pool_load(name, tuple(lent[name]), now, close)
                      for name in self.models)
        startable = self.provider.num_startable() if self.provider is not None else 0
        return AllocationContext(now, loads, startable)

    def _pool_load(self, name: str, lent_out: tuple[str, ...], now: float,
                   close: bool) -> PoolLoad:
        pool = self.pools[name]
        engines = []
        for engine_id in pool.healthy_engines():
            a = self.assignment.get(engine_id)
            if a is not None:
                engines.append(EngineLoad(engine_id, a.home, pool.in_flight(engine_id), a.since,
                                          a.pending is not None, kv_usage(a.view),
                                          a.can_retire, a.view.max_concurrency,
                                          num_waiting(a.view), kv_live(a.view)))
        return self.monitor.snapshot(pool, self.models[name], tuple(engines), lent_out, now,
                                     close)

    # ---- carrying out decisions ----------------------------------------------------
    def begin(self, decision: Decision, now: float) -> bool:
        """Validate ``decision`` and start it (phase 1: drain). False if refused."""
        if decision.kind is DecisionKind.SCALE_OUT:
            return self._start_engine(decision, now)
        why = self._invalid(decision)
        if why:
            self.refused.append((now, decision, why))
            return False
        a = self.assignment[decision.engine_id]
        a.pending = decision
        self._draining.add(decision.engine_id)
        self.pools[decision.source].set_draining(decision.engine_id, True)
        self.records.append(MoveRecord(decision, now, None))
        if self._num_active(decision.source) == 0:
            self._emptied.add(decision.source)
        return True

    def _invalid(self, d: Decision) -> str:
        a = self.assignment.get(d.engine_id)
        if a is None or a.pool != d.source or a.pending is not None:
            return f"engine {d.engine_id!r} is not an idle member of pool {d.source!r}"
        if d.kind is not DecisionKind.SCALE_IN:
            if d.target not in self.models or d.target == d.source:
                return f"unknown or same target pool {d.target!r}"
            if self.models[d.target] != self.models[d.source]:
                return f"pools {d.source!r} and {d.target!r} serve different models"
        if d.kind in (DecisionKind.MOVE, DecisionKind.LEND) and a.home != d.source:
            return f"engine {d.engine_id!r} is on loan; only its home may move or lend it"
        if d.kind is DecisionKind.RETURN and d.target != a.home:
            return f"engine {d.engine_id!r} belongs to {a.home!r}, not {d.target!r}"
        if d.kind is DecisionKind.SCALE_IN and (self.provider is None or not a.can_retire):
            return f"engine {d.engine_id!r} was not started by a provider"
        if d.kind is DecisionKind.SCALE_IN and a.home != d.source:
            return f"engine {d.engine_id!r} is on loan from {a.home!r}; return it before retiring it"
        if d.kind is DecisionKind.MOVE and self._num_active(d.source, own=True) < 2:
            # a borrower living on loans alone could never give them back
            return f"pool {d.source!r} would be left without an active engine of its own"
        if self._num_active(d.source) < 2 and not self._may_empty(d):
            return f"pool {d.source!r} would be left without an active engine"
        return ""

    def _may_empty(self, d: Decision) -> bool:
        """A lend may take an idle pool's last engine: the first call queued there
        recalls it at once (``settle``). A return may take an idle borrower's last
        engine: it is the lender's (the borrower's own may have failed)."""
        pool = self.pools[d.source]
        return (d.kind in (DecisionKind.LEND, DecisionKind.RETURN) and pool.queue_depth == 0
                and sum(pool.in_flight(e) for e in pool.engine_ids) == 0)

    def _num_active(self, pool_name: str, own: bool = False) -> int:
        """Healthy engines of the pool not being moved (``own``: of its own, not on loan)."""
        assigned = self.assignment
        return sum(1 for e in self.pools[pool_name].healthy_engines()
                   if e in assigned and assigned[e].pending is None
                   and (not own or assigned[e].home == pool_name))

    def settle(self, now: float) -> list[Change]:
        """Phase 2: reassign every draining engine with nothing left in flight;
        first recall a lent engine for any emptied pool that has queued work."""
        if self._emptied:
            self._recall(now)
        changes: list[Change] = []
        for engine_id in sorted(self._draining):
            a = self.assignment[engine_id]
            d = a.pending
            if d is None:
                continue
            source = self.pools[d.source]
            if (source.queue_depth and self._num_active(d.source) == 0
                    and engine_id in source.healthy_engines()):
                # the pool's other engines failed (or left) while this one drained: it
                # stays, or the queued calls (a failed call's retry among them) would wait
                # for an engine that never comes
                self._call_off(a, d, now, f"pool {d.source!r} has queued work and no other "
                               "active engine")
            elif not source.in_flight(engine_id):
                self._draining.discard(engine_id)
                changes.append(self._reassign(a, d, now))
        return changes

    def _call_off(self, a: Assignment, d: Decision, now: float, why: str) -> None:
        """End a drain without reassigning: the engine serves its pool again."""
        self._draining.discard(a.engine_id)
        a.pending = None
        self.pools[d.source].set_draining(a.engine_id, False)
        self._mark_done(d, now, cancelled=why)

    def _recall(self, now: float) -> None:
        for name in sorted(self._emptied):
            if self._num_active(name) > 0 or any(
                    a.pending is not None and a.pending.target == name
                    for a in self.assignment.values()):
                self._emptied.discard(name)
                continue
            if not self.pools[name].queue_depth:
                continue
            lent = sorted((a for a in self.assignment.values()
                           if a.home == name and a.pool != name and a.pending is None),
                          key=lambda a: (self.pools[a.pool].in_flight(a.engine_id), a.engine_id))
            for a in lent:
                decision = Decision(DecisionKind.RETURN, a.engine_id, a.pool, name,
                                    f"{name} has queued work and no engine")
                if not self._invalid(decision):  # checked first: this runs every dispatch
                    self.begin(decision, now)
                    break

    def _reassign(self, a: Assignment, d: Decision, now: float) -> Change:
        source = self.pools[d.source]
        was_healthy = a.engine_id in source.healthy_engines()
        view = source.remove_engine(a.engine_id)
        self._mark_done(d, now)
        if d.kind is DecisionKind.SCALE_IN:
            del self.assignment[a.engine_id]
            if self.provider is not None:
                self.provider.stop(a.engine_id, now)
            return a.engine_id, ""
        target = self.pools[d.target]
        target.add_engine(view)
        target.set_healthy(a.engine_id, was_healthy)
        a.pool, a.since, a.view, a.is_moved, a.pending = d.target, now, view, True, None
        if d.kind is DecisionKind.MOVE:
            a.home = d.target
        return a.engine_id, d.target

    def _mark_done(self, d: Decision, now: float, cancelled: str = "") -> None:
        for i in range(len(self.records) - 1, -1, -1):
            if self.records[i].decision is d:
                self.records[i] = self.records[i]._replace(done_at=now, cancelled=cancelled)
                return

    # ---- scale out ---------------------------------------------------------------
    def _start_engine(self, d: Decision, now: float) -> bool:
        if (self.provider is None or d.target not in self.models
                or self.provider.num_startable() <= 0):
            self.refused.append((now, d, "no provider can start an engine"))
            return False
        engine_id = self.provider.start(d.target, self.models[d.target], now)
        if engine_id is None:
            self.refused.append((now, d, "the provider could not start an engine"))
            return False
        record = MoveRecord(d._replace(engine_id=engine_id), now, None)
        self.records.append(record)
        self._starting[engine_id] = record
        return True

    def _admit_started(self, now: float) -> list[Change]:
        if self.provider is None:
            return []
        changes = []
        for engine_id, pool_name, view in self.provider.ready(now):
            record = self._starting.pop(engine_id, None)
            self.pools[pool_name].add_engine(view)
            self.assignment[engine_id] = Assignment(engine_id, pool_name, pool_name, now, view,
                                                    is_moved=True, can_retire=True)
            if record is not None:
                self._mark_done(record.decision, now)
            changes.append((engine_id, pool_name))
        for engine_id, why in self.provider.failed(now):
            record = self._starting.pop(engine_id, None)
            if record is not None:
                self._mark_done(record.decision, now, cancelled=why)
        return changes

    # ---- accounting ------------------------------------------------------------------
    def observe_submit(self, call: StageCall, now: float) -> None:
        """A call entered a pool (the controller reports every accepted call)."""
        if call.pool in self.models:
            self.monitor.observe_submit(call.pool, call, now)

    def observe(self, call: StageCall, usage: Usage, now: float) -> None:
        """A call of a managed pool finished (the controller reports every call)."""
        if call.pool not in self.models:
            return
        self.monitor.observe(call.pool, call, usage, now)
        a = self.assignment.get(call.engine_id)
        started = call.started_at if call.started_at is not None else now
        if a is not None and a.is_moved and started - a.since <= self.config.cold_window_s:
            cold = self.cold.setdefault(call.pool, ColdStats())
            cold.num_calls += 1
            cold.prompt_tokens += usage.prompt_tokens
            cold.cached_prompt_tokens += usage.cached_prompt_tokens or 0

    def num_moves(self, kinds: tuple[DecisionKind, ...] = tuple(DecisionKind)) -> int:
        """Decisions begun, of the given kinds."""
        return sum(1 for r in self.records if r.decision.kind in kinds)

    def decision_counts(self) -> dict[str, int]:
        """Decisions begun, by kind (every kind listed)."""
        return {k.value: self.num_moves((k,)) for k in DecisionKind}

    def cold_summary(self) -> dict[str, dict[str, float]]:
        """Per pool: calls served by engines within ``cold_window_s`` of arriving
        there, their prompt and cached prompt tokens and hit rate."""
        return {name: {"calls": c.num_calls, "prompt_tokens": c.prompt_tokens,
                       "cached_prompt_tokens": c.cached_prompt_tokens,
                       "hit_rate": round(c.hit_rate, 4)}
                for name, c in sorted(self.cold.items())}

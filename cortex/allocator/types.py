"""Boundary types of the allocator: what a policy sees and what it decides.

A policy sees one ``AllocationContext`` (time, one ``PoolLoad`` per LLM pool, the
engine budget a provider can still start) and returns ``Decision``s. Everything
here is immutable so a policy can be a pure function of its inputs.
"""
from __future__ import annotations

import enum
from typing import NamedTuple


class DecisionKind(str, enum.Enum):
    MOVE = "move"            # reassign an engine for good (its home changes)
    LEND = "lend"            # an idle engine serves another pool; home stays
    RETURN = "return"        # a lent engine goes back to its home pool
    SCALE_OUT = "scale_out"  # start a new engine for a pool (provider)
    SCALE_IN = "scale_in"    # retire an engine (drain, then stop it)


class EngineLoad(NamedTuple):
    """One engine as the allocator sees it."""

    engine_id: str
    home: str                  # pool that owns it; differs from the serving pool while lent
    in_flight: int
    since: float               # when it began serving its pool (-inf: placed at start)
    is_draining: bool
    kv_usage: float | None     # fraction of KV memory in use, when the backend can tell
    can_retire: bool = False   # started by a provider: scale-in may stop it
    slots: int = 1             # calls it runs at once (the view's ``max_concurrency``)
    waiting: int = 0           # calls it holds but cannot run yet (KV memory full)
    kv_live: float | None = None  # fraction of KV memory held by running calls, when known


class PoolLoad(NamedTuple):
    """A pool's load, as an allocation policy sees it.

    Work is measured in expected service seconds (the orchestrator's per-stage
    estimate of each call): ``work_rate`` is the smoothed work arriving per second
    at the pool's unloaded cost per call (the offered load, which does not depend
    on how many engines the pool has), ``backlog_s`` the work queued in the pool.
    """

    name: str
    model: str
    engines: tuple[EngineLoad, ...]    # serving here (active and draining)
    lent_out: tuple[str, ...]          # engines whose home is here, serving elsewhere
    queue_depth: int
    in_flight: int
    work_rate: float                   # EWMA of expected service seconds arriving per second
    backlog_s: float                   # expected service s queued or held in engines (viable)
    min_slack_s: float | None          # least slack among queued calls (None: queue empty)
    num_late: int                      # calls that finished past their run's deadline, last step
    num_finished: int                  # calls finished, last step
    hit_rate: float | None             # cached / prompt tokens over the last step

    @property
    def active(self) -> tuple[EngineLoad, ...]:
        return tuple(e for e in self.engines if not e.is_draining)

    @property
    def num_active(self) -> int:
        return sum(1 for e in self.engines if not e.is_draining)

    @property
    def slots(self) -> int:
        """Calls the active engines run at once."""
        return sum(e.slots for e in self.active)

    @property
    def active_in_flight(self) -> int:
        """Calls in flight on the active (not draining) engines."""
        return sum(e.in_flight for e in self.active)

    def busy_after_giving(self, engine: EngineLoad) -> float:
        """How busy the pool's other active engines would be without ``engine``: the
        larger of the share of their slots its in-flight calls take and (where every
        engine reports it) the share of their KV memory its running calls hold. Slots
        alone mislead where memory binds first: an engine whose KV holds three
        sequences is full with three of its sixteen slots busy."""
        active = self.active
        left = sum(e.slots for e in active) - engine.slots
        if left <= 0:
            return float("inf")
        busy = sum(e.in_flight for e in active) / left
        live = [e.kv_live for e in active]
        if len(active) > 1 and all(x is not None for x in live):
            busy = max(busy, sum(live) / (len(active) - 1))  # type: ignore[arg-type]
        return busy

    @property
    def is_saturated(self) -> bool:
        """Calls queue and every slot of its active engines is busy."""
        return self.queue_depth > 0 and self.active_in_flight >= self.slots > 0

    def demand(self, drain_s: float) -> float:
        """Engine-seconds per second the pool needs: offered load plus its backlog
        drained over ``drain_s`` seconds."""
        return self.work_rate + self.backlog_s / drain_s

    def pressure(self, drain_s: float, num_engines: int | None = None) -> float:
        """Demand per engine (of ``num_engines``, default the active ones);
        infinite with demand and no engine."""
        n = self.num_active if num_engines is None else num_engines
        d = self.demand(drain_s)
        if n > 0:
            return d / n
        return float("inf") if d > 0 else 0.0


class AllocationContext(NamedTuple):
    now: float
    pools: tuple[PoolLoad, ...]
    num_startable: int = 0        # engines a provider could still start (0: no scaling)

    def pool(self, name: str) -> PoolLoad:
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(f"no pool {name!r} in this allocation context")


class Decision(NamedTuple):
    """One allocation change. ``engine_id`` is empty for ``SCALE_OUT`` (the
    provider names the new engine); ``target`` is empty for ``SCALE_IN``."""

    kind: DecisionKind
    engine_id: str
    source: str
    target: str
    reason: str


class MoveRecord(NamedTuple):
    """A decision as carried out: when it began and when the engine arrived."""

    decision: Decision
    begun_at: float
    done_at: float | None
    cancelled: str = ""     # why the drain was called off (the engine stayed); "" if not

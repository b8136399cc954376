"""The default allocation policy, ``slo-pressure`` (rule in docs/allocator.md).

Demand of a pool = offered work per second (smoothed) + its backlog drained over
``drain_s``; pressure = demand per active engine. After ``warmup_s`` of history
(a workflow's later stages see no calls at first), each step, in this order:

1. **Return** a lent engine when its home pool has queued work (or a call with
   negative slack), or when the borrower no longer needs it.
2. **Move** engines from donor *d* to receiver *r* while
   ``pressure(r) > (1 + hysteresis) * demand(d) / (active(d) - 1)`` -- the donor
   would still be less loaded after giving the engine up -- counting the engines
   already moved this step; only engines that served *d* for ``min_dwell_s``, never
   *d*'s last, neither pool mid-move, and the same (d, r) pair winning
   ``confirm_steps`` steps in a row. A pool fed within ``min_dwell_s`` gives
   engines away, and a pair skips confirmation, only when *r* is ``urgent_ratio``
   times as pressed as *d* would be (a pool just fed gives back only when that
   lasts ``confirm_steps`` steps). Under a steady load the reverse move is
   impossible (proof in docs/allocator.md).
3. **Lend** an idle engine of an idle pool (low pressure, KV not full) to a
   compatible pool with queued work, when no move was made.
4. **Scale out** a pool whose SLO is threatened (late calls or negative slack)
   when no move was made and a provider can start an engine; **scale in** a
   provider-started engine of a pool idle for ``scale_in_idle_s``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from cortex.allocator.policy import (
    ALLOCATION_POLICIES,
    BaseAllocationPolicy,
    compatible,
    has_drain,
    movable_engines,
    own_active,
)
from cortex.allocator.types import AllocationContext, Decision, DecisionKind, EngineLoad, PoolLoad


@dataclass(frozen=True, slots=True)
class PressureState:
    """What ``slo-pressure`` remembers between steps."""

    pair: tuple[str, str] | None = None               # (donor, receiver) that won last step
    streak: int = 0                                    # consecutive steps it won
    received_at: tuple[tuple[str, float], ...] = ()   # pool -> last time it got engines
    idle_since: tuple[tuple[str, float], ...] = ()    # pool -> idle since (scale-in)
    last_scale_at: float = float("-inf")
    started_at: float | None = None                    # first step (warm-up)


@dataclass(frozen=True, slots=True)
class PressureConfig:
    hysteresis: float = 0.1         # receiver must beat the donor's after-move pressure by 10%
    min_dwell_s: float = 15.0       # an engine (and a fed pool) stays this long before moving
    confirm_steps: int = 2          # consecutive steps a (donor, receiver) pair must win ...
    urgent_ratio: float = 2.0       # ... unless the receiver is this many times as pressed
    min_pressure: float = 0.1       # a receiver below this (s/s per engine) is left alone
    max_moves_per_step: int = 8     # engines one step may move or lend (one pair)
    drain_s: float = 3.0            # backlog counts as demand spread over this many seconds
    warmup_s: float = 10.0          # no moves until the load signals have this much history
    lend_below: float = 0.05        # a lender's pressure must be below this ...
    lend_after_s: float = 2.0       # ... and the engine at home at least this long
    lend_max_kv_usage: float = 0.8  # ... and its KV memory (when known) at most this full
    lend_last_engine: bool = True   # an idle pool may lend its last engine (recalled at once)
    return_queue_depth: int = 1     # a lender with this many queued calls takes engines back
    scale_in_idle_s: float = 30.0   # idle this long: retire a provider-started engine
    scale_cooldown_s: float = 15.0  # at most one scale decision per this many seconds
    saturation_moves: bool = False  # a saturated pool (queue, every slot busy) takes an
    spare_occupancy: float = 0.6    # engine from one whose slots stay at most this busy

    def __post_init__(self) -> None:
        for f in fields(self):   # a nan compares false with every bound below
            value, default = getattr(self, f.name), f.default
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"slo-pressure: {f.name} must be true or false, "  # noqa: TRY004
                                     f"got {value!r}")
                continue
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if isinstance(default, int) and not (number and isinstance(value, int)):
                raise ValueError(f"slo-pressure: {f.name} must be an integer, got {value!r}")
            if not (number and math.isfinite(value)):
                raise ValueError(f"slo-pressure: {f.name} must be a finite number, "
                                 f"got {value!r}")
        if self.hysteresis < 0 or self.min_dwell_s < 0 or self.confirm_steps < 1:
            raise ValueError("slo-pressure: hysteresis and min_dwell_s must be >= 0 and "
                             "confirm_steps >= 1")
        if self.max_moves_per_step < 1 or self.return_queue_depth < 1 or self.drain_s <= 0:
            raise ValueError("slo-pressure: max_moves_per_step and return_queue_depth must "
                             "be >= 1 and drain_s > 0")


def is_slo_threatened(pool: PoolLoad) -> bool:
    return pool.num_late > 0 or (pool.min_slack_s is not None and pool.min_slack_s < 0)


@ALLOCATION_POLICIES.register("slo-pressure")
class PressurePolicy(BaseAllocationPolicy):
    """Moves capacity from the pool with the most spare to the most pressed pool,
    with hysteresis, a minimum dwell time and confirmation; lends and returns idle
    engines; scales out/in through a provider. Options: ``PressureConfig`` fields."""

    OPTIONS = tuple(PressureConfig.__dataclass_fields__)

    def __init__(self, **options: float) -> None:
        self.config = PressureConfig(**options)  # type: ignore[arg-type]

    def initial_state(self) -> PressureState:
        return PressureState()

    def decide(self, ctx: AllocationContext, state: PressureState
               ) -> tuple[list[Decision], PressureState]:
        if state.started_at is None:
            state = replace(state, started_at=ctx.now)
        decisions = self._returns(ctx)
        moves: list[Decision] = []
        if ctx.now - state.started_at >= self.config.warmup_s:
            moves, state = self._rebalance(ctx, state)
        decisions += moves
        if not moves:
            decisions += self._lend(ctx, {d.engine_id for d in decisions})
        scaling, state = self._scale(ctx, state, bool(moves), {d.engine_id for d in decisions})
        return decisions + scaling, state

    def pressure(self, pool: PoolLoad, num_engines: int | None = None) -> float:
        return pool.pressure(self.config.drain_s, num_engines)

    # ---- 1. return lent engines ----------------------------------------------
    def _returns(self, ctx: AllocationContext) -> list[Decision]:
        """One lent engine per needy lender per step (the idlest); all of them once
        the borrower is idle."""
        out, needy_served = [], set()
        lent = sorted(((e, pool) for pool in ctx.pools for e in pool.engines
                       if e.home != pool.name and not e.is_draining),
                      key=lambda ep: (ep[0].in_flight, ep[0].engine_id))
        for engine, pool in lent:
            home = ctx.pool(engine.home)
            if self._is_idle(pool):
                why = f"borrower {pool.name} is idle"
            elif home.name not in needy_served and (
                    home.queue_depth >= self.config.return_queue_depth
                    or is_slo_threatened(home)):
                needy_served.add(home.name)
                why = f"lender {home.name} has {home.queue_depth} queued calls"
            else:
                continue
            out.append(Decision(DecisionKind.RETURN, engine.engine_id, pool.name, home.name,
                                why))
        return out

    def _is_idle(self, pool: PoolLoad) -> bool:
        return pool.queue_depth == 0 and self.pressure(pool) < self.config.lend_below

    # ---- 2. rebalance with hysteresis ------------------------------------------
    def _rebalance(self, ctx: AllocationContext, state: PressureState
                   ) -> tuple[list[Decision], PressureState]:
        best = self._best_pair(ctx, state)
        saturated = None
        if best is None and self.config.saturation_moves:
            saturated = self._saturation_move(ctx, state)
            best = saturated and saturated[:2]
        if not best:
            return [], replace(state, pair=None, streak=0)
        donor, receiver = best
        pair = (donor.name, receiver.name)
        streak = state.streak + 1 if state.pair == pair else 1
        # urgency skips confirmation, except for a pool just fed giving back: one step's
        # spike (a burst of queued calls) must not undo a move made a second ago
        urgent = (saturated is None and not self._fed_recently(state, donor.name, ctx.now)
                  and self._is_urgent(receiver, donor))
        if streak < self.config.confirm_steps and not urgent:
            return [], replace(state, pair=pair, streak=streak)
        if saturated is not None:
            engine, after = saturated[2], saturated[3]
            moves = [Decision(DecisionKind.MOVE, engine.engine_id, donor.name, receiver.name,
                              f"{receiver.name} saturated ({receiver.queue_depth} queued, every "
                              f"slot busy); {donor.name} {after:.0%} busy after the move")]
        else:
            moves = [Decision(DecisionKind.MOVE, e.engine_id, donor.name, receiver.name,
                              f"{receiver.name} {r:.3f} s/s per engine > (1+"
                              f"{self.config.hysteresis:g}) x {donor.name} {d:.3f} after "
                              f"the move")
                     for e, r, d in self._engines_to_move(ctx, donor, receiver)]
        received = dict(state.received_at) | {receiver.name: ctx.now}
        return moves, replace(state, pair=None, streak=0,
                              received_at=tuple(sorted(received.items())))

    def _best_pair(self, ctx: AllocationContext, state: PressureState
                   ) -> tuple[PoolLoad, PoolLoad] | None:
        """The most pressed receiver and the donor with the most spare the rule allows."""
        cfg = self.config
        pools = [p for p in ctx.pools if not has_drain(p)]
        receivers = [p for p in pools if self.pressure(p) >= cfg.min_pressure
                     or p.queue_depth > 0 or is_slo_threatened(p)]
        for receiver in sorted(receivers, key=lambda p: (-self.pressure(p), p.name)):
            donors = sorted((d for d in pools if compatible(d, receiver) and own_active(d) >= 2
                             and not self._is_idle(d)  # an idle pool lends instead
                             and not (cfg.saturation_moves and d.is_saturated)),
                            key=lambda d: (self.pressure(d, d.num_active - 1), d.name))
            for donor in donors:
                if not self._beats(receiver, receiver.num_active, donor, donor.num_active - 1):
                    break  # donors are sorted: no later one qualifies either
                if (self._fed_recently(state, donor.name, ctx.now)
                        and not self._is_urgent(receiver, donor)):
                    continue  # a pool just fed gives back only in an emergency
                if movable_engines(donor, ctx.now, cfg.min_dwell_s):
                    return donor, receiver
        return None

    def _saturation_move(self, ctx: AllocationContext, state: PressureState
                         ) -> tuple[PoolLoad, PoolLoad, EngineLoad, float] | None:
        """(donor, receiver, engine, donor's busy share after) when a pool is saturated
        (calls queue, every slot busy) and a compatible pool with no queue, no engine
        short of memory (``EngineLoad.waiting``) stays at most ``spare_occupancy`` busy
        without one of its engines, by slots and by KV memory held
        (``PoolLoad.busy_after_giving``). Catches what expected-work
        pressure misses: a backlog of calls too late to count as demand still has to be
        served, and ahead of new calls under strict slack order."""
        cfg = self.config
        pools = [p for p in ctx.pools if not has_drain(p)]
        for receiver in sorted((p for p in pools if p.is_saturated),
                               key=lambda p: (-p.queue_depth, p.name)):
            options = []
            for donor in pools:
                if (not compatible(donor, receiver) or own_active(donor) < 2
                        or donor.queue_depth > 0 or any(e.waiting for e in donor.active)
                        or self._fed_recently(state, donor.name, ctx.now)):
                    continue
                movable = movable_engines(donor, ctx.now, cfg.min_dwell_s)
                if not movable:
                    continue
                after = donor.busy_after_giving(movable[0])
                if after <= cfg.spare_occupancy:
                    options.append((after, donor.name, donor, movable[0]))
            if options:
                after, _, donor, engine = min(options)
                return donor, receiver, engine, after
        return None

    def _fed_recently(self, state: PressureState, pool: str, now: float) -> bool:
        """``pool`` received engines within ``min_dwell_s``."""
        return now - dict(state.received_at).get(pool, float("-inf")) < self.config.min_dwell_s

    def _is_urgent(self, receiver: PoolLoad, donor: PoolLoad) -> bool:
        return self.pressure(receiver) > self.config.urgent_ratio * self.pressure(
            donor, donor.num_active - 1)

    def _beats(self, receiver: PoolLoad, n_r: int, donor: PoolLoad, n_d: int) -> bool:
        """The move rule: receiver pressure > (1 + h) x donor pressure after the move."""
        if n_d < 1:
            return False
        return self.pressure(receiver, n_r) > (1 + self.config.hysteresis) * self.pressure(
            donor, n_d)

    def _engines_to_move(self, ctx: AllocationContext, donor: PoolLoad, receiver: PoolLoad
                         ) -> list[tuple[EngineLoad, float, float]]:
        """Engines one after another while each still satisfies the rule with the
        previous ones moved. Returns (engine, receiver pressure, donor pressure after)."""
        out = []
        n_r, n_d = receiver.num_active, donor.num_active
        spare = own_active(donor) - 1  # never its last own engine (loans must go back)
        for engine in movable_engines(donor, ctx.now, self.config.min_dwell_s)[:spare]:
            if len(out) >= self.config.max_moves_per_step \
                    or not self._beats(receiver, n_r, donor, n_d - 1):
                break
            out.append((engine, self.pressure(receiver, n_r), self.pressure(donor, n_d - 1)))
            n_r, n_d = n_r + 1, n_d - 1
        return out

    # ---- 3. lend idle engines ----------------------------------------------------
    def _lend(self, ctx: AllocationContext, taken: set[str]) -> list[Decision]:
        """Idle engines of idle pools go to the most pressed compatible pool that has
        queued work or is busy (up to ``max_moves_per_step``; lenders never borrow)."""
        cfg = self.config
        borrowers = sorted((p for p in ctx.pools if not p.lent_out and (
            p.queue_depth > 0 or self.pressure(p) >= cfg.min_pressure)),
            key=lambda p: (-self.pressure(p), p.name))
        out: list[Decision] = []
        for borrower in borrowers:
            for lender in sorted(ctx.pools, key=lambda p: (self.pressure(p), p.name)):
                for engine in self._lendable(ctx, lender, borrower, taken, len(out)):
                    if len(out) >= cfg.max_moves_per_step:
                        return out
                    taken.add(engine.engine_id)
                    out.append(Decision(DecisionKind.LEND, engine.engine_id, lender.name,
                                        borrower.name, f"{lender.name} is idle; {borrower.name} "
                                        f"{self.pressure(borrower):.3f} s/s per engine, "
                                        f"{borrower.queue_depth} queued"))
            if out:
                return out
        return out

    def _lendable(self, ctx: AllocationContext, lender: PoolLoad, borrower: PoolLoad,
                  taken: set[str], num_lent: int) -> list[EngineLoad]:
        """Idle engines ``lender`` can spare for ``borrower`` (it keeps one unless
        ``lend_last_engine`` and it has nothing in flight)."""
        cfg = self.config
        keep = 0 if cfg.lend_last_engine and lender.in_flight == 0 else 1
        if (not compatible(lender, borrower) or not self._is_idle(lender)
                or any(e.home != lender.name for e in lender.engines)):
            return []
        spare = [e for e in sorted(lender.active, key=lambda e: e.engine_id)
                 if e.in_flight == 0 and e.engine_id not in taken
                 and ctx.now - e.since >= cfg.lend_after_s
                 and (e.kv_usage is None or e.kv_usage <= cfg.lend_max_kv_usage)]
        already = sum(1 for e in lender.active if e.engine_id in taken)
        return spare[:max(0, lender.num_active - keep - already)]

    # ---- 4. scale out / in ---------------------------------------------------------
    def _scale(self, ctx: AllocationContext, state: PressureState, moved: bool,
               taken: set[str]) -> tuple[list[Decision], PressureState]:
        cfg = self.config
        idle = dict(state.idle_since)
        for pool in ctx.pools:
            if pool.queue_depth == 0 and self.pressure(pool) < cfg.lend_below:
                idle.setdefault(pool.name, ctx.now)
            else:
                idle.pop(pool.name, None)
        state = replace(state, idle_since=tuple(sorted(idle.items())))
        if moved or ctx.now - state.last_scale_at < cfg.scale_cooldown_s:
            return [], state
        decision = self._scale_out(ctx) or self._scale_in(ctx, idle, taken)
        if decision is None:
            return [], state
        return [decision], replace(state, last_scale_at=ctx.now)

    def _scale_out(self, ctx: AllocationContext) -> Decision | None:
        if ctx.num_startable <= 0:
            return None
        threatened = [p for p in ctx.pools if is_slo_threatened(p) and not has_drain(p)]
        if not threatened:
            return None
        pool = max(threatened, key=lambda p: (self.pressure(p), p.name))
        return Decision(DecisionKind.SCALE_OUT, "", "", pool.name,
                        f"{pool.name} threatens the SLO ({pool.num_late} late calls, "
                        f"least slack {pool.min_slack_s}) and no move helps")

    def _scale_in(self, ctx: AllocationContext, idle: dict[str, float], taken: set[str]
                  ) -> Decision | None:
        """Retire a provider-started engine of a pool idle for ``scale_in_idle_s``. When it
        is its pool's only engine (the pool's own engines moved away while it served),
        first move a configured engine over (``_make_room``), so the started one can go:
        otherwise it would keep running for good."""
        settled = [p for p in ctx.pools
                   if p.name in idle and ctx.now - idle[p.name] >= self.config.scale_in_idle_s]
        for pool in settled:
            spare = [e for e in pool.active if e.can_retire and e.in_flight == 0
                     and e.home == pool.name and e.engine_id not in taken]
            if not spare:
                continue
            engine = min(spare, key=lambda e: e.engine_id)
            if pool.num_active >= 2:
                return Decision(DecisionKind.SCALE_IN, engine.engine_id, pool.name, "",
                                f"{pool.name} idle for {ctx.now - idle[pool.name]:.0f} s")
            room = self._make_room(pool, engine.engine_id, settled, taken)
            if room is not None:
                return room
        return None

    @staticmethod
    def _make_room(pool: PoolLoad, retiring: str, settled: list[PoolLoad], taken: set[str]
                   ) -> Decision | None:
        """Move an idle configured engine to ``pool`` from a compatible settled pool with
        two or more engines."""
        for donor in settled:
            if donor is pool or donor.model != pool.model or own_active(donor) < 2:
                continue
            kept = [e for e in donor.active if not e.can_retire and e.in_flight == 0
                    and e.home == donor.name and e.engine_id not in taken]
            if kept:
                moved = min(kept, key=lambda e: e.engine_id)
                return Decision(DecisionKind.MOVE, moved.engine_id, donor.name, pool.name,
                                f"make room to retire {retiring}: {pool.name} and "
                                f"{donor.name} idle")
        return None

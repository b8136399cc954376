"""The ``planned`` allocation policy: a split schedule decided ahead of time.

Where an operator knows when the stage mix changes (a nightly batch of hard
questions, a new database going live at 9:00), the split can follow a plan
instead of the load signals. ``plan`` is a list of ``{"at_s": seconds, "split":
{pool: engines}}`` entries; ``at_s`` counts from the allocator's first policy
step. From each entry's time on, engines move from pools above their planned
count to pools below it (same model only, the idlest engines first), with the
same two-phase move as any policy. Pools a plan entry does not name keep what
they have; a pool is never planned below one engine.

``cortex bench --allocator planned`` without a ``plan`` option builds one from
the trace's failure schedule: at each shift, the split static ``cortex`` would
choose for the new failure rate (docs/allocator.md, *A planned split*) -- the
reference a reactive policy is measured against.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from cortex.allocator.policy import (
    ALLOCATION_POLICIES,
    BaseAllocationPolicy,
    PolicyOptionError,
    compatible,
    has_drain,
    movable_engines,
    own_active,
)
from cortex.allocator.types import AllocationContext, Decision, DecisionKind
from cortex.checks import is_int, is_number


class PlanEntry(NamedTuple):
    at_s: float
    split: tuple[tuple[str, int], ...]   # (pool, engines), sorted by pool


class PlannedState(NamedTuple):
    started_at: float | None = None


def parse_plan(raw: Any) -> tuple[PlanEntry, ...]:
    """``raw`` (a list of ``{"at_s": ..., "split": {...}}``, or that list as JSON text)
    as entries.

    Raises:
        ValueError: naming the entry and field that is wrong.
    """
    if isinstance(raw, str):   # `--alloc-option plan=[...]` on the command line
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"planned: plan is not valid JSON ({exc})") from None
    if not isinstance(raw, (list, tuple)) or not raw:
        raise ValueError("planned: plan must be a non-empty list of "
                         "{at_s: seconds, split: {pool: engines}} entries")
    entries, last = [], -1.0
    for i, item in enumerate(raw):
        where = f"planned: plan[{i}]"
        if not isinstance(item, Mapping):
            raise ValueError(f"{where} must be a mapping with at_s and split, "  # noqa: TRY004
                             f"got {item!r}")
        unknown = sorted(set(item) - {"at_s", "split"}, key=str)
        if unknown:
            raise ValueError(f"{where}.{unknown[0]}: unknown field (known: at_s, split)")
        at = item.get("at_s")
        if not (is_number(at) and at >= 0):
            raise ValueError(f"{where}.at_s must be a number of seconds >= 0, got {at!r}")
        if at <= last:
            raise ValueError(f"{where}.at_s ({at:g}) must be later than the entry before "
                             f"({last:g})")
        split = item.get("split")
        if not isinstance(split, Mapping) or not split:
            raise ValueError(f"{where}.split must be a non-empty mapping of pool -> engines, "
                             f"got {split!r}")
        for pool, count in split.items():
            if not isinstance(pool, str):
                raise ValueError(f"{where}.split: pool names must be strings, "  # noqa: TRY004
                                 f"got {pool!r}")
            if not is_int(count, 1):
                raise ValueError(f"{where}.split.{pool}: must be an integer >= 1 (a pool "
                                 f"keeps at least one engine), got {count!r}")
        entries.append(PlanEntry(float(at), tuple(sorted(split.items()))))
        last = at
    return tuple(entries)


@ALLOCATION_POLICIES.register("planned")
class PlannedPolicy(BaseAllocationPolicy):
    """Moves engines to follow ``plan``: from each entry's ``at_s`` on (seconds since
    the first step), pools above their planned count give engines to pools below it.
    It waits while any pool has a move draining, so counts are never double-booked."""

    OPTIONS = ("plan",)

    def __init__(self, plan: Any = None) -> None:
        try:
            self.plan = parse_plan(plan)
        except ValueError as exc:
            raise PolicyOptionError(str(exc), "plan") from None

    def check_pools(self, pools: Iterable[str]) -> None:
        known = set(pools)
        for i, entry in enumerate(self.plan):
            for pool, _ in entry.split:
                if pool not in known:
                    raise PolicyOptionError(
                        f"planned: plan[{i}].split names pool {pool!r}, which is not an LLM "
                        f"pool here ({', '.join(sorted(known))})", "plan")

    def initial_state(self) -> PlannedState:
        return PlannedState()

    def start(self, state: PlannedState, now: float) -> PlannedState:
        """``at_s`` counts from the allocator's first step, not from its first decision
        (one ``interval_s`` later)."""
        return state if state.started_at is not None else PlannedState(now)

    def target(self, elapsed_s: float) -> dict[str, int] | None:
        """The split planned ``elapsed_s`` after the first step (None before the first
        entry)."""
        current = None
        for entry in self.plan:
            if entry.at_s <= elapsed_s:
                current = dict(entry.split)
        return current

    def decide(self, ctx: AllocationContext, state: PlannedState
               ) -> tuple[list[Decision], PlannedState]:
        state = self.start(state, ctx.now)   # decided before any step: count from now
        target = self.target(ctx.now - state.started_at)
        if target is None or any(has_drain(p) for p in ctx.pools):
            return [], state
        pools = {p.name: p for p in ctx.pools if p.name in target}
        surplus = {n: own_active(p) - target[n] for n, p in pools.items()
                   if own_active(p) > target[n]}
        deficit = {n: target[n] - p.num_active for n, p in pools.items()
                   if p.num_active < target[n]}
        decisions: list[Decision] = []
        for receiver in sorted(deficit, key=lambda n: (-deficit[n], n)):
            for donor in sorted(surplus, key=lambda n: (-surplus[n], n)):
                if not compatible(pools[donor], pools[receiver]):
                    continue
                engines = movable_engines(pools[donor], ctx.now, 0.0)
                taken = sum(1 for d in decisions if d.source == donor)
                for engine in engines[taken:taken + min(surplus[donor], deficit[receiver])]:
                    decisions.append(Decision(
                        DecisionKind.MOVE, engine.engine_id, donor, receiver,
                        f"plan: {receiver} {target[receiver]} engines, {donor} "
                        f"{target[donor]}"))
                    surplus[donor] -= 1
                    deficit[receiver] -= 1
                if deficit[receiver] == 0:
                    break
        return decisions, state


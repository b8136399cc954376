"""Placement policies: which pools exist, which stages each serves, how the
engine budget is split among them, and each pool's scheduler and router.

Tool stages always get their own executor pool. The engine budget is the
same under every policy; ``cortex`` splits it among per-stage pools in
proportion to each stage's expected work (see ``split_engines``).
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from cortex.core import OK
from cortex.registry import Registry
from cortex.workflow.graph import END, CompiledWorkflow

TOOL_POOL = "tools"


@dataclass(frozen=True, slots=True)
class PoolSpec:
    name: str
    stages: tuple[str, ...]
    num_engines: int
    scheduler: str
    router: str


@dataclass(frozen=True, slots=True)
class Layout:
    policy: str
    pools: tuple[PoolSpec, ...]

    def pool_of(self, stage: str) -> str:
        for pool in self.pools:
            if stage in pool.stages:
                return pool.name
        raise KeyError(f"no pool serves stage {stage!r}")


PlacementFn = Callable[[list[str], int, dict[str, float]], list[PoolSpec]]
PLACEMENTS: Registry[PlacementFn] = Registry("placement policy")


def _shared(router: str) -> PlacementFn:
    def place(llm_stages: list[str], num_engines: int, work: dict[str, float]) -> list[PoolSpec]:
        return [PoolSpec("llm", tuple(llm_stages), num_engines, "fcfs", router)]

    return place


PLACEMENTS.add("shared-fcfs", _shared("least_loaded"))
PLACEMENTS.add("shared-prefix", _shared("prefix_affinity"))


@PLACEMENTS.register("cortex")
def _isolated(llm_stages: list[str], num_engines: int, work: dict[str, float]
              ) -> list[PoolSpec]:
    split = split_engines({s: work.get(s, 1.0) for s in llm_stages}, num_engines)
    return [PoolSpec(s, (s,), split[s], "slack", "prefix_affinity") for s in llm_stages]


# Same pools and initial split as ``cortex``; the controller adds an allocator
# (``cortex.allocator``) that moves, lends and scales engines at run time.
PLACEMENTS.add("cortex-malleable", _isolated)


def split_engines(work: dict[str, float], num_engines: int) -> dict[str, int]:
    """Split engines among stages in proportion to expected work, at least one each.

    Rule: every stage gets one engine; the remaining ``num_engines - len(work)``
    go by largest remainder of ``work_share * num_engines - 1`` (ties to the
    stage listed first).

    Raises:
        ValueError: fewer engines than stages.
    """
    stages = list(work)
    if num_engines < len(stages):
        raise ValueError(f"stage isolation needs at least one engine per LLM stage "
                         f"({len(stages)}: {', '.join(stages)}), got {num_engines}")
    total = sum(work.values()) or 1.0
    ideal = {s: work[s] / total * num_engines for s in stages}
    split = {s: 1 for s in stages}
    for _ in range(num_engines - len(stages)):
        s = max(stages, key=lambda x: (ideal[x] - split[x], -stages.index(x)))
        split[s] += 1
    return split


def build_layout(policy: str, workflow: CompiledWorkflow | list[CompiledWorkflow],
                 num_engines: int, work: dict[str, float] | None = None,
                 num_tool_workers: int = 8) -> Layout:
    """Build the pool layout for ``policy`` (a name registered in ``PLACEMENTS``).

    Several workflows may share a layout; stages with the same name share a pool.
    """
    workflows = workflow if isinstance(workflow, list) else [workflow]
    llm_stages = list(dict.fromkeys(s for wf in workflows for s in wf.llm_stages))
    pools = PLACEMENTS.get(policy)(llm_stages, num_engines, work or {})
    tool_stages = tuple(dict.fromkeys(
        s for wf in workflows for s in wf.stages if s not in llm_stages))
    if tool_stages:
        pools.append(PoolSpec(TOOL_POOL, tool_stages, num_tool_workers, "fcfs", "least_loaded"))
    return Layout(policy, tuple(pools))


def expected_stage_work(workflow: CompiledWorkflow, service_s: dict[str, float],
                        outcome_probs: dict[str, dict[str, float]], num_walks: int = 2000,
                        seed: int = 0) -> dict[str, float]:
    """Expected service seconds per run for each stage (visits x service time).

    Visits come from seeded random walks over the graph with the given
    outcome probabilities per stage (default: always ``ok``), honouring edge
    budgets exactly, so loops with retry budgets are counted right.
    """
    rng = random.Random(seed)
    visits = dict.fromkeys(workflow.stages, 0)
    for _ in range(num_walks):
        node, taken = workflow.entry, {}
        while node != END:
            visits[node] += 1
            probs = outcome_probs.get(node, {OK: 1.0})
            outcome = rng.choices(list(probs), weights=list(probs.values()))[0]
            edge = next((e for e in workflow.stages[node].edges if e.matches(outcome)), None)
            if edge is None:
                break
            count = taken.get(edge.edge_id, 0)
            if edge.max_traversals is not None and count >= edge.max_traversals:
                break
            taken[edge.edge_id] = count + 1
            node = edge.target
    return {s: visits[s] / num_walks * service_s.get(s, workflow.stages[s].prior_service_s)
            for s in workflow.stages}

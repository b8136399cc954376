"""Figures of one allocation for bench reports: decisions by kind, moves per
minute, refused decisions and how cold moved engines were in their new pools."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cortex.allocator.allocator import Allocator
from cortex.orchestrator.run import Run


def allocation_summary(allocator: Allocator, runs: Sequence[Run]) -> dict[str, Any]:
    """Decision counts, moves per minute over the runs' span, and the hit rate of
    calls served by engines within ``cold_window_s`` of arriving in a pool next to
    each pool's overall hit rate (a moved engine arrives cold; this shows it)."""
    start = min((r.arrival for r in runs), default=0.0)
    end = max((r.finished_at or r.arrival for r in runs), default=0.0)
    minutes = max(end - start, 1e-9) / 60.0
    counts = allocator.decision_counts()
    pools = allocator.pools
    return {
        "policy": allocator.config.policy,
        "decisions": counts,
        "decisions_per_min": round(sum(counts.values()) / minutes, 3),
        "moves_per_min": round(counts["move"] / minutes, 3),
        "refused": len(allocator.refused),
        "engines_at_end": {name: len(pools[name].engine_ids) for name in allocator.models},
        "pool_hit_rate": {name: round(pools[name].stats.prefix_hit_rate, 4)
                          for name in allocator.models},
        "cold": allocator.cold_summary(),
        "log": [{"t": round(r.begun_at, 3), "done": None if r.done_at is None
                 else round(r.done_at, 3), "kind": r.decision.kind.value,
                 "engine": r.decision.engine_id, "from": r.decision.source,
                 "to": r.decision.target, "why": r.decision.reason,
                 **({"cancelled": r.cancelled} if r.cancelled else {})}
                for r in allocator.records],
    }

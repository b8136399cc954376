"""Queue-order policies. A scheduler maps a queued call to a sort key; the
pool keeps its queue sorted by that key (lowest first)."""
from __future__ import annotations

from collections.abc import Callable

from cortex.orchestrator.run import StageCall
from cortex.registry import Registry

SortKey = tuple[float, float, int]
Scheduler = Callable[[StageCall], SortKey]
SCHEDULERS: Registry[Scheduler] = Registry("scheduler")


@SCHEDULERS.register("fcfs")
def fcfs_key(call: StageCall) -> SortKey:
    """First come, first served: enqueue time, then arrival order."""
    return (call.queued_at, 0.0, call.seq)


@SCHEDULERS.register("slack")
def slack_key(call: StageCall) -> SortKey:
    """Least slack first; shorter expected service breaks ties.

    slack(t) = deadline - t - expected remaining service; ``t`` is common to all
    queued calls, so ordering by ``deadline - remaining`` orders by slack at any t.
    """
    return (call.slack_key, call.expected_service_s, call.seq)

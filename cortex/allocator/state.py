"""The allocator's own records: its configuration, one ``Assignment`` per engine
it manages, and the cold-start counters of moved engines."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from cortex.allocator.types import Decision
from cortex.engine.base import EngineView


@dataclass(slots=True)
class AllocatorConfig:
    """Args:
        policy: name in ``ALLOCATION_POLICIES``.
        policy_options: keyword options of the policy.
        interval_s: time between policy steps.
        load_alpha: EWMA weight of a new load sample.
        cost_window_s: the unloaded cost per call is the least seen over this long.
        cold_window_s: a moved engine's calls this soon after arriving count as cold-start.
        workflow_demand: a stage's offered calls are at least its runs' first visits x
            its visits per run, repeats weighted by the share of its calls finishing in
            time (``LoadMonitor``); on by default.
    """

    policy: str = "slo-pressure"
    policy_options: dict[str, Any] = field(default_factory=dict)
    interval_s: float = 1.0
    load_alpha: float = 0.8
    cost_window_s: float = 120.0
    cold_window_s: float = 30.0
    workflow_demand: bool = True

    def __post_init__(self) -> None:
        """Raises ValueError naming the field (nan and inf are refused)."""
        for name, want, ok in (
                ("interval_s", "> 0", lambda v: v > 0),
                ("load_alpha", "in (0, 1]", lambda v: 0 < v <= 1),
                ("cost_window_s", "> 0", lambda v: v > 0),
                ("cold_window_s", ">= 0", lambda v: v >= 0)):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or not ok(value)):
                raise ValueError(f"allocator: {name} must be a finite number {want}, "
                                 f"got {value!r}")


@dataclass(slots=True)
class Assignment:
    engine_id: str
    home: str
    pool: str
    since: float                     # joined its pool (-inf: placed at start)
    view: EngineView | None = None   # what the router sees (kept for KV-usage reads)
    is_moved: bool = False           # arrived by a decision (its cache started cold)
    can_retire: bool = False         # started by a provider
    pending: Decision | None = None  # draining toward this decision


@dataclass(slots=True)
class ColdStats:
    """Calls served by engines within ``cold_window_s`` of arriving in a pool."""

    num_calls: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0

    @property
    def hit_rate(self) -> float:
        return self.cached_prompt_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

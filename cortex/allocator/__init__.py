"""Malleable resources: the allocator moves, lends and scales engines between
the LLM stage pools while the system runs.

Who owns what:

* ``Allocator`` (``allocator.py``) owns the engine -> pool assignment of LLM
  pools and every move in flight (drain, then reassign);
* policies (``policy.py``, ``pressure.py``) are pure functions of ``PoolLoad``
  snapshots (``types.py``) and their own state, registered in
  ``ALLOCATION_POLICIES``;
* ``LoadMonitor`` (``signals.py``) owns the per-step load windows;
* providers (``scaling.py``) start and stop engines for scale out / in;
* knobs (``knobs.py``) are per-run degradations the orchestrator turns when a
  run's slack goes negative;
* ``placement.py`` registers the ``cortex-malleable`` placement policy.

Rule and measurements: docs/allocator.md.
"""
from __future__ import annotations

from cortex.allocator import planned as _planned  # noqa: F401  (registers planned)
from cortex.allocator import pressure as _pressure  # noqa: F401  (registers slo-pressure)
from cortex.allocator.allocator import Allocator
from cortex.allocator.placement import MALLEABLE, is_malleable, pool_models
from cortex.allocator.policy import ALLOCATION_POLICIES, BaseAllocationPolicy, StaticPolicy
from cortex.allocator.pressure import PressureConfig, PressurePolicy, PressureState
from cortex.allocator.state import AllocatorConfig, Assignment, ColdStats
from cortex.allocator.types import (
    AllocationContext,
    Decision,
    DecisionKind,
    EngineLoad,
    MoveRecord,
    PoolLoad,
)

__all__ = [
    "ALLOCATION_POLICIES", "MALLEABLE", "AllocationContext", "Allocator", "AllocatorConfig",
    "Assignment", "BaseAllocationPolicy", "ColdStats", "Decision", "DecisionKind", "EngineLoad",
    "MoveRecord", "PoolLoad", "PressureConfig", "PressurePolicy", "PressureState",
    "StaticPolicy", "is_malleable", "pool_models",
]

"""The ``cortex-malleable`` placement policy: ``cortex``'s initial split (stage
isolation, slack order, prefix affinity) plus an ``Allocator`` that moves, lends
and scales engines at run time. Importing this module registers it."""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from cortex.engine.base import EngineView
from cortex.pool.placement import PLACEMENTS, Layout
from cortex.workflow.graph import CompiledWorkflow

MALLEABLE = "cortex-malleable"
DEFAULT_MODEL = "default"

if MALLEABLE not in PLACEMENTS:
    PLACEMENTS.add(MALLEABLE, PLACEMENTS.get("cortex"))


def is_malleable(policy: str) -> bool:
    """Whether ``policy`` comes with an allocator."""
    return policy == MALLEABLE


def pool_models(layout: Layout, workflows: Iterable[CompiledWorkflow],
                engines: Mapping[str, Sequence[EngineView]]) -> dict[str, str]:
    """Model of every LLM pool (pool -> model name): its engines' ``model``
    attribute when they have one, else its stages' configured model, else
    ``default``. Engines may only move between pools of the same model."""
    stages = {name: stage for wf in workflows for name, stage in wf.stages.items()}
    models: dict[str, str] = {}
    for spec in layout.pools:
        llm = [stages[s] for s in spec.stages if s in stages and stages[s].is_llm]
        if not llm:
            continue
        views = engines.get(spec.name) or ()
        model = getattr(views[0], "model", None) if views else None
        models[spec.name] = str(model or (llm[0].llm and llm[0].llm.model) or DEFAULT_MODEL)
    return models

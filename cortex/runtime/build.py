"""Assemble a real-time deployment from a ``CortexConfig``: start engines, lay
out pools for the policy, wire the controller and the asyncio runtime.

``policy: cortex-malleable`` gets an allocator (the controller adds it for that
policy); knobs declared in a workflow's YAML file (``knobs:``) are loaded here."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import NamedTuple

from cortex.allocator.knobs import load_knobs
from cortex.config import ConfigError, CortexConfig
from cortex.controller import Controller, Preparer
from cortex.core import EngineRequest
from cortex.engine.base import BaseEngine
from cortex.orchestrator.orchestrator import Orchestrator
from cortex.orchestrator.run import StageCall
from cortex.pool.placement import Layout, build_layout, expected_stage_work
from cortex.runtime.realtime import RealtimeRuntime, chat_preparer
from cortex.workflow import CompiledWorkflow


async def start_engines(cfg: CortexConfig) -> dict[str, BaseEngine]:
    """Create and start every engine; on any failure close the others and raise
    a ``ConfigError`` naming the engine's config entry."""
    engines = cfg.make_engines()
    paths = {eid: spec["_path"] for eid, spec in cfg.engine_specs}
    results = await asyncio.gather(*(e.start() for e in engines.values()),
                                   return_exceptions=True)
    failed = [(eid, exc) for eid, exc in zip(engines, results) if isinstance(exc, BaseException)]
    if failed:
        await asyncio.gather(*(e.close() for e in engines.values()), return_exceptions=True)
        eid, exc = failed[0]
        raise ConfigError(cfg.source, paths[eid], f"engine {eid} failed to start: {exc}")
    return engines


class PoolPlan(NamedTuple):
    """Where the engines go: the layout, each LLM pool's engines, each stage's pool."""

    layout: Layout
    views: dict[str, list[BaseEngine]]
    pool_of: dict[str, str]

    def engines_of(self, stage: str) -> list[BaseEngine]:
        return self.views.get(self.pool_of[stage], [])


def plan_pools(cfg: CortexConfig, engines: dict[str, BaseEngine]) -> PoolPlan:
    """Lay out pools for ``cfg.policy`` and hand the engines to the LLM pools in order."""
    work: dict[str, float] = {}
    for wf in cfg.workflows:
        work.update(expected_stage_work(wf, {}, {}))
    layout = build_layout(cfg.policy, cfg.workflows, len(engines), work,
                          num_tool_workers=cfg.tool_threads)
    ids = iter(engines)
    llm_stages = {s for wf in cfg.workflows for s in wf.llm_stages}
    views = {p.name: [engines[next(ids)] for _ in range(p.num_engines)]
             for p in layout.pools if set(p.stages) & llm_stages}
    return PoolPlan(layout, views, {s: p.name for p in layout.pools for s in p.stages})


async def assemble(cfg: CortexConfig, engines: dict[str, BaseEngine], plan: PoolPlan,
                   prepare: Preparer, workflows: list[CompiledWorkflow] | None = None
                   ) -> RealtimeRuntime:
    """Wire orchestrator (with the workflows' knobs), controller and runtime; start it.

    Args:
        workflows: every workflow the runtime serves (default: the config's).
    """
    workflows = workflows or cfg.workflows
    knobs = {wf.name: load_knobs(wf) for wf in workflows}
    orchestrator = Orchestrator({wf.name: wf for wf in workflows}, default_slo_s=cfg.slo_s,
                                knobs={name: k for name, k in knobs.items() if k.knobs})
    controller = Controller(orchestrator, plan.layout, plan.views, prepare,
                            max_queue=cfg.max_queue, load_bound=cfg.load_bound)
    runtime = RealtimeRuntime(controller, engines, num_tool_threads=cfg.tool_threads)
    await runtime.start()
    return runtime


async def build_runtime(cfg: CortexConfig, engines: dict[str, BaseEngine] | None = None,
                        observe: Callable[[EngineRequest], None] | None = None
                        ) -> RealtimeRuntime:
    """Wire a runtime over started engines (started here when not given).

    Args:
        observe: called with every LLM request once tokenized (benchmarks use it
            for oracle accounting).
    """
    engines = engines if engines is not None else await start_engines(cfg)
    plan = plan_pools(cfg, engines)
    prepare = chat_preparer(plan.engines_of)
    if observe is not None:
        inner = prepare

        def prepare(call: StageCall) -> EngineRequest:
            request = inner(call)
            observe(request)
            return request
    return await assemble(cfg, engines, plan, prepare)

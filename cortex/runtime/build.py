"""Assemble a real-time deployment from a ``CortexConfig``: start engines, lay
out pools for the policy, wire the controller and the asyncio runtime.

``policy: cortex-malleable`` gets an allocator: the config's ``allocator:``
section when it has one (with an engine provider when it allows scale-out),
else the controller's default. Knobs declared in a workflow's YAML file
(``knobs:``) are loaded here."""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any, NamedTuple

from cortex.allocator import Allocator
from cortex.allocator.knobs import KnobKind, KnobSet, load_knobs
from cortex.allocator.scaling import (
    AsyncEngineProvider,
    EngineFactory,
    core_budget,
    standby_urls,
)
from cortex.config import BACKENDS, ConfigError, CortexConfig
from cortex.controller import Controller, Preparer
from cortex.core import EngineRequest
from cortex.engine.base import BaseEngine, served_models
from cortex.orchestrator.orchestrator import Orchestrator
from cortex.orchestrator.run import StageCall
from cortex.pool.placement import Layout, build_layout, expected_stage_work
from cortex.runtime.realtime import RealtimeRuntime, chat_preparer
from cortex.workflow import CompiledWorkflow

log = logging.getLogger(__name__)


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


def template_factory(template: dict[str, Any]) -> EngineFactory:
    """A factory for ``AsyncEngineProvider`` that builds engines like the config
    entry ``template`` (its backend and options). The template names the model:
    asked for a pool of another model it raises ``ValueError`` (the provider then
    starts nothing and the allocator records the refusal)."""
    options = {k: v for k, v in template.items() if k != "_path"}
    backend = BACKENDS.get(options["backend"])

    def make(engine_id: str, model: str) -> BaseEngine:
        engine = backend(engine_id, dict(options))
        served = getattr(engine, "model", None)
        if served is not None and served != model:
            raise ValueError(f"new engines are built like {template['_path']} and serve "
                             f"{served!r}, not the pool's model {model!r}")
        return engine

    return make


def scale_out_budget(cfg: CortexConfig) -> int:
    """The engine budget of scale-out (configured engines included):
    ``allocator.max_engines``, for the embedded llama.cpp backend capped at one
    engine per ``n_threads`` cores with one core kept for the server
    (``core_budget``). 0 when the config does not scale out."""
    section = cfg.allocator
    if section is None or section.template is None or section.max_engines is None:
        return 0
    budget = section.max_engines
    if section.template["backend"] == "llamacpp":
        threads = max(int(section.template.get("n_threads", 1)),
                      int(section.template.get("n_threads_batch", 1)))
        cores = max(core_budget(cores_per_engine=threads), len(cfg.engine_specs))
        if cores < budget:
            log.warning("allocator.max_engines: %d capped at %d llama.cpp engines (%d cores, "
                        "one kept for the server, %d per engine)", budget, cores,
                        os.cpu_count() or 1, threads)
            budget = cores
    return budget


def make_allocator(cfg: CortexConfig, engines: dict[str, BaseEngine]) -> Allocator | None:
    """The allocator of the config's ``allocator:`` section, with an
    ``AsyncEngineProvider`` over ``engines`` (the runtime's dict: started
    engines join it) when the section allows scale-out. None without a section
    (the controller then adds its default for a malleable policy).

    Call it with the event loop running: the provider starts engines as tasks.
    """
    section = cfg.allocator
    if section is None:
        return None
    provider = None
    budget = scale_out_budget(cfg)
    if budget > len(engines):
        template = section.template
        if section.standby_urls:
            options = {k: v for k, v in template.items()
                       if k not in ("backend", "count", "model", "_path")}
            factory = standby_urls(section.standby_urls, **options)
        else:
            factory = template_factory(template)
        provider = AsyncEngineProvider(factory, engines, budget,
                                       prefix=f"{template['backend']}-auto")
    return Allocator(section.config, provider=provider)


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


def check_model_knobs(knobs: dict[str, KnobSet], plan: PoolPlan) -> None:
    """A ``model`` knob must name a model every engine of its stage's pool serves
    (engines that list ``models``, e.g. llama.cpp with ``extra_models``); engines
    that serve any name (remote servers, simulated engines) are not checked.

    Raises:
        ValueError: naming the workflow, knob, pool and what its engines serve.
    """
    for workflow, knob_set in knobs.items():
        for knob in knob_set.knobs:
            if knob.kind is not KnobKind.MODEL or knob.stage not in plan.pool_of:
                continue
            engines = plan.engines_of(knob.stage)
            missing = [e.engine_id for e in engines
                       if knob.value not in (served_models(e) or (knob.value,))]
            if missing:
                served = sorted({m for e in engines for m in served_models(e) or ()})
                raise ValueError(
                    f"workflow {workflow!r}: knob {knob.name!r} serves stage {knob.stage!r} "
                    f"with model {knob.value!r}, but engines {', '.join(missing)} of pool "
                    f"{plan.pool_of[knob.stage]!r} do not serve it (they serve "
                    f"{', '.join(served)}); add {knob.value!r} to the llamacpp engines' "
                    f"extra_models")


async def assemble(cfg: CortexConfig, engines: dict[str, BaseEngine], plan: PoolPlan,
                   prepare: Preparer, workflows: list[CompiledWorkflow] | None = None
                   ) -> RealtimeRuntime:
    """Wire orchestrator (with the workflows' knobs), controller and runtime; start it.

    Args:
        workflows: every workflow the runtime serves (default: the config's).
    """
    from cortex.nl2sql.tools import set_database_access

    workflows = workflows or cfg.workflows
    set_database_access(cfg.database_access())  # the databases clients may name
    knobs = {wf.name: load_knobs(wf) for wf in workflows}
    check_model_knobs(knobs, plan)
    orchestrator = Orchestrator({wf.name: wf for wf in workflows}, default_slo_s=cfg.slo_s,
                                timeout_factor=cfg.run_timeout_factor,
                                knobs={name: k for name, k in knobs.items() if k.knobs})
    controller = Controller(orchestrator, plan.layout, plan.views, prepare,
                            max_queue=cfg.max_queue, load_bound=cfg.load_bound,
                            late=cfg.late,
                            allocator=make_allocator(cfg, engines))
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

"""Assemble the server's deployment: the config's workflows plus one single-stage
workflow per LLM pool, so that an OpenAI request naming a pool is one call
served by that pool's own queue, scheduler and router.

The pieces are the same as ``cortex.runtime.build.build_runtime``; the server
adds the per-pool workflows to the layout and a preparer that sends a direct
pool call's own messages and sampling parameters to the engine.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from cortex.config import CortexConfig
from cortex.core import EngineRequest, SamplingParams
from cortex.engine.base import BaseEngine
from cortex.orchestrator.run import StageCall
from cortex.pool.placement import Layout
from cortex.runtime.build import PoolPlan, assemble, plan_pools, start_engines
from cortex.runtime.realtime import RealtimeRuntime, chat_preparer
from cortex.workflow import CompiledWorkflow, WorkflowBuilder

POOL_WORKFLOW_PREFIX = "pool:"
# Called as an LLM call is about to enter its pool's queue: (call, pool name).
QueueHook = Callable[[StageCall, str], None]


@dataclass(slots=True)
class DirectCall:
    """What a direct pool call sends to the engine instead of a rendered template."""

    params: SamplingParams
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None


@dataclass(slots=True)
class Deployment:
    """A running deployment.

    Attributes:
        runtime: the real-time runtime (owns runs, pools and engines).
        workflows: user-facing workflows by name.
        pool_workflows: pool name -> name of its single-stage workflow.
        direct_calls: run id -> engine input of a direct pool call (the server
            adds one before submitting and drops it when the run ends).
    """

    runtime: RealtimeRuntime
    workflows: dict[str, CompiledWorkflow]
    pool_workflows: dict[str, str]
    direct_calls: dict[str, DirectCall] = field(default_factory=dict)


def pool_workflow(pool: str, owner: CompiledWorkflow, stage_name: str) -> CompiledWorkflow:
    """A one-stage workflow whose LLM stage is named like ``owner``'s stage
    ``stage_name``, so it is served by the same pool."""
    prior_ms = owner.stages[stage_name].prior_service_s * 1000.0
    wf = WorkflowBuilder(f"{POOL_WORKFLOW_PREFIX}{pool}", inputs=["prompt", "system"],
                         output=stage_name)
    wf.llm(stage_name, user="{{ prompt }}", system="{{ system }}",
           expected_service_ms=max(prior_ms, 1.0))
    return wf.compile()


def _pool_workflows(layout: Layout, workflows: list[CompiledWorkflow]
                    ) -> list[CompiledWorkflow]:
    owner = {s: wf for wf in workflows for s in wf.llm_stages}
    return [pool_workflow(p.name, owner[p.stages[0]], p.stages[0])
            for p in layout.pools if p.stages[0] in owner]


def _preparer(plan: PoolPlan, direct_calls: dict[str, DirectCall],
              on_queue: QueueHook | None) -> Callable[[StageCall], EngineRequest]:
    rendered = chat_preparer(plan.engines_of)

    def prepare(call: StageCall) -> EngineRequest:
        if on_queue is not None:
            on_queue(call, plan.pool_of[call.stage.name])
        direct = direct_calls.get(call.run_id)
        if direct is None:
            return rendered(call)
        request = EngineRequest(call.call_id, messages=direct.messages, prompt=direct.prompt,
                                params=direct.params,
                                model=call.stage.llm.model if call.stage.llm else None)
        engines = plan.engines_of(call.stage.name)
        if engines:
            request.prompt_tokens = engines[0].tokenize(request)
        return request

    return prepare


async def build_deployment(cfg: CortexConfig, engines: dict[str, BaseEngine] | None = None,
                           on_queue: QueueHook | None = None) -> Deployment:
    """Start engines (unless given), lay out pools and start the runtime.

    Args:
        on_queue: told about every LLM call as it enters its pool's queue.

    Raises:
        ConfigError: an engine failed to start (names its config entry).
        ValueError: the policy cannot place the workflows on the engine budget.
    """
    engines = engines if engines is not None else await start_engines(cfg)
    try:
        return await _assemble(cfg, engines, on_queue)
    except BaseException:
        await asyncio.gather(*(e.close() for e in engines.values()), return_exceptions=True)
        raise


async def _assemble(cfg: CortexConfig, engines: dict[str, BaseEngine],
                    on_queue: QueueHook | None) -> Deployment:
    plan = plan_pools(cfg, engines)
    per_pool = _pool_workflows(plan.layout, cfg.workflows)
    direct_calls: dict[str, DirectCall] = {}
    runtime = await assemble(cfg, engines, plan, _preparer(plan, direct_calls, on_queue),
                             [*cfg.workflows, *per_pool])
    return Deployment(runtime, {wf.name: wf for wf in cfg.workflows},
                      {wf.name[len(POOL_WORKFLOW_PREFIX):]: wf.name for wf in per_pool},
                      direct_calls)

"""Factories for allocator tests: hand-made pool loads and small controllers."""
from __future__ import annotations

from cortex.allocator import Allocator, AllocatorConfig, StaticPolicy
from cortex.allocator.types import AllocationContext, EngineLoad, PoolLoad
from cortex.controller import Controller, StartCall
from cortex.core import EngineRequest
from cortex.orchestrator.run import StageCall
from cortex.pool.placement import Layout, PoolSpec
from tests.factories import FakeView, loop_workflow, orchestrator

INF = float("-inf")


def engines(pool: str, n: int, start: int = 0, in_flight: int = 0, since: float = INF,
            home: str | None = None) -> tuple[EngineLoad, ...]:
    return tuple(EngineLoad(f"{pool}{i}", home or pool, in_flight, since, False, None)
                 for i in range(start, start + n))


def load(name: str, n: int = 2, work: float = 0.0, queue: int = 0, model: str = "m",
         engine_list: tuple[EngineLoad, ...] | None = None, lent_out: tuple[str, ...] = (),
         slack: float | None = None, late: int = 0, backlog: float = 0.0) -> PoolLoad:
    """A pool with ``n`` home engines offered ``work`` s/s, ``queue`` calls queued."""
    es = engine_list if engine_list is not None else engines(name, n)
    in_flight = sum(e.in_flight for e in es)
    return PoolLoad(name, model, es, lent_out, queue, in_flight, work, backlog, slack,
                    late, 0, None)


def ctx(now: float, *pools: PoolLoad, startable: int = 0) -> AllocationContext:
    return AllocationContext(now, tuple(pools), startable)


def malleable_controller(num_gen: int = 2, num_fix: int = 1, concurrency: int = 1,
                         allocator: Allocator | None = None) -> Controller:
    """loop workflow (gen -> check -> fix) on pools gen / fix / tools, engines e0..."""
    wf = loop_workflow()
    layout = Layout("cortex-malleable", (
        PoolSpec("gen", ("gen",), num_gen, "slack", "prefix_affinity"),
        PoolSpec("fix", ("fix",), num_fix, "slack", "prefix_affinity"),
        PoolSpec("tools", ("check",), 4, "fcfs", "least_loaded")))
    ids = iter(range(num_gen + num_fix))
    views = {"gen": [FakeView(f"e{next(ids)}", max_concurrency=concurrency)
                     for _ in range(num_gen)],
             "fix": [FakeView(f"e{next(ids)}", max_concurrency=concurrency)
                     for _ in range(num_fix)]}
    allocator = allocator or Allocator(AllocatorConfig("static"), policy=StaticPolicy())
    return Controller(orchestrator(wf), layout, views, _prepare, allocator=allocator)


def _prepare(call: StageCall) -> EngineRequest:
    return EngineRequest(call.call_id, prompt_tokens=[1, 2, 3])


def starts(actions: list) -> list[StartCall]:
    return [a for a in actions if isinstance(a, StartCall)]

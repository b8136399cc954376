"""Scale out / in: the provider hook, the policy rule, the allocator carrying it out."""
from __future__ import annotations

import asyncio

from cortex.allocator import Allocator, AllocatorConfig, Decision, DecisionKind, PressurePolicy
from cortex.allocator.scaling import AsyncEngineProvider, SimEngineProvider
from cortex.core import Completion, EngineRequest
from cortex.engine.base import BaseEngine
from cortex.engine.sim import SimEngine, SimEngineConfig
from tests.allocator.alloc_factories import ctx, engines, load, malleable_controller

SMALL = SimEngineConfig(kv_capacity_tokens=4096)


def test_sim_provider_budget_startup_and_stop():
    pool_engines = {"e0": SimEngine("e0", SMALL)}
    provider = SimEngineProvider(pool_engines, SMALL, max_engines=2, startup_s=5.0)
    assert provider.num_startable() == 1
    engine_id = provider.start("fix", "sim", now=1.0)
    assert engine_id is not None and provider.num_startable() == 0
    assert provider.start("fix", "sim", now=1.0) is None
    assert provider.ready(5.9) == []
    ((eid, pool, view),) = provider.ready(6.0)
    assert (eid, pool) == (engine_id, "fix") and pool_engines[eid] is view
    provider.stop(eid, 9.0)
    assert provider.num_startable() == 1


def test_policy_scales_out_a_threatened_pool_only_with_budget():
    policy = PressurePolicy(warmup_s=0)
    late = load("fix", 1, work=5.0, late=3)
    gen = load("gen", 1, work=5.0)
    (d,) = policy.decide(ctx(0.0, gen, late, startable=2), policy.initial_state())[0]
    assert (d.kind, d.target) == (DecisionKind.SCALE_OUT, "fix")
    assert policy.decide(ctx(0.0, gen, late, startable=0), policy.initial_state())[0] == []


def test_policy_scales_in_a_started_engine_after_idling():
    policy = PressurePolicy(warmup_s=0, scale_in_idle_s=30.0)
    started = engines("fix", 1, start=5)[0]._replace(can_retire=True)
    fix = load("fix", work=0.0, engine_list=engines("fix", 1) + (started,))
    gen = load("gen", 1, work=0.05)                  # too quiet to borrow fix's engines
    state = policy.initial_state()
    decisions, state = policy.decide(ctx(0.0, gen, fix), state)
    assert decisions == []
    decisions, state = policy.decide(ctx(31.0, gen, fix), state)
    assert [(d.kind, d.engine_id) for d in decisions] == [(DecisionKind.SCALE_IN, "fix5")]


def test_a_started_engine_left_alone_in_its_pool_is_retired_after_a_move_makes_room():
    # The generator's own engine moved away while the started one served it; once both
    # pools idle, a fix engine moves over first (a pool is never emptied), then the started
    # engine is retired. Without the move it would run for good.
    policy = PressurePolicy(warmup_s=0, scale_in_idle_s=30.0, scale_cooldown_s=0.0)
    started = engines("gen", 1, start=9)[0]._replace(can_retire=True)
    gen = load("gen", engine_list=(started,))
    fix = load("fix", 2)
    decisions, state = policy.decide(ctx(0.0, gen, fix), policy.initial_state())
    assert decisions == []
    (move,), state = policy.decide(ctx(31.0, gen, fix), state)
    assert (move.kind, move.engine_id, move.source, move.target) == (
        DecisionKind.MOVE, "fix0", "fix", "gen")
    gen = load("gen", engine_list=(started, engines("fix", 1)[0]._replace(home="gen")))
    fix = load("fix", engine_list=engines("fix", 1, start=1))
    (retire,), state = policy.decide(ctx(32.0, gen, fix), state)
    assert (retire.kind, retire.engine_id) == (DecisionKind.SCALE_IN, "gen9")
    gen = load("gen", engine_list=(started,))
    other_model = load("fix", 2, model="gemma")      # no compatible donor: nothing to do
    _, state = policy.decide(ctx(0.0, gen, other_model), policy.initial_state())
    assert policy.decide(ctx(31.0, gen, other_model), state)[0] == []


def test_allocator_adds_started_engines_and_retires_them():
    sim_engines: dict[str, SimEngine] = {}
    provider = SimEngineProvider(sim_engines, SMALL, max_engines=4, startup_s=2.0)
    allocator = Allocator(AllocatorConfig("static"), provider=provider)
    c = malleable_controller(num_gen=2, num_fix=1, allocator=allocator)
    scale_out = Decision(DecisionKind.SCALE_OUT, "", "", "fix", "test")
    assert allocator.begin(scale_out, 0.0)
    c.tick(1.0)
    assert len(c.pools["fix"].engine_ids) == 1                   # still starting
    c.tick(2.0)
    (new,) = [e for e in c.pools["fix"].engine_ids if e not in ("e0", "e1", "e2")]
    assert c.engine_pool[new] == "fix" and allocator.assignment[new].can_retire
    assert allocator.records[0].done_at == 2.0
    assert not allocator.begin(Decision(DecisionKind.SCALE_IN, "e2", "fix", "", "no"), 3.0)
    assert allocator.begin(Decision(DecisionKind.SCALE_IN, new, "fix", "", "idle"), 3.0)
    c.tick(4.0)
    assert new not in c.engine_pool and new not in c.pools["fix"].engine_ids
    assert provider.num_startable() == 4 - len(sim_engines) + 1


class _FakeEngine(BaseEngine):
    def __init__(self, engine_id: str, model: str) -> None:
        self.engine_id, self.model = engine_id, model
        self.started = self.closed = False

    async def start(self) -> None:
        await asyncio.sleep(0)
        self.started = True

    async def close(self) -> None:
        self.closed = True

    def tokenize(self, request: EngineRequest) -> list[int]:
        return []

    def cached_prefix_len(self, tokens: list[int], model: str | None = None) -> int:
        return 0

    async def generate(self, request: EngineRequest) -> Completion:
        raise NotImplementedError


async def test_async_provider_starts_on_the_loop_and_closes_on_stop():
    live: dict[str, BaseEngine] = {}
    provider = AsyncEngineProvider(_FakeEngine, live, max_engines=1)
    engine_id = provider.start("gen", "smollm2-135m", 0.0)
    assert engine_id == "auto-0" and provider.num_startable() == 0
    assert provider.ready(0.0) == []
    await asyncio.sleep(0.01)
    ((eid, pool, engine),) = provider.ready(0.1)
    assert (eid, pool) == ("auto-0", "gen") and engine.started and live[eid] is engine
    provider.stop(eid, 0.2)
    await asyncio.sleep(0.01)
    assert engine.closed and eid not in live and provider.num_startable() == 1


class _BrokenStart(_FakeEngine):
    async def start(self) -> None:
        raise RuntimeError("model file is corrupt")


def _no_factory(engine_id: str, model: str) -> BaseEngine:
    raise TypeError("factory bug")


async def test_an_engine_that_fails_to_start_closes_its_scale_out_record():
    live: dict[str, BaseEngine] = {}
    provider = AsyncEngineProvider(_BrokenStart, live, max_engines=4)
    allocator = Allocator(AllocatorConfig("static"), provider=provider)
    c = malleable_controller(num_gen=1, num_fix=1, allocator=allocator)
    c.tick(0.0)
    assert allocator.begin(Decision(DecisionKind.SCALE_OUT, "", "", "fix", "test"), 0.0)
    await asyncio.sleep(0.01)
    c.tick(1.0)
    (record,) = allocator.records
    assert record.done_at == 1.0 and "failed to start: RuntimeError('model file is corrupt')" \
        in record.cancelled
    assert record.decision.engine_id not in c.engine_pool and not live
    assert provider.num_startable() == 4 and provider.failed(2.0) == []


async def test_a_factory_that_raises_refuses_the_scale_out_instead_of_raising():
    provider = AsyncEngineProvider(_no_factory, {}, max_engines=2)
    assert provider.start("fix", "m", 0.0) is None
    allocator = Allocator(AllocatorConfig("static"), provider=provider)
    malleable_controller(num_gen=1, num_fix=1, allocator=allocator)
    assert not allocator.begin(Decision(DecisionKind.SCALE_OUT, "", "", "fix", "test"), 0.0)
    assert allocator.refused[-1][2] == "the provider could not start an engine"

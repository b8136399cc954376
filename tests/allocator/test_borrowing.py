"""Borrowing: idle engines serve a compatible pool and go back when their home needs them."""
from __future__ import annotations

from cortex.allocator import Allocator, AllocatorConfig, Decision, DecisionKind, PressurePolicy
from tests.allocator.alloc_factories import ctx, engines, load, malleable_controller, starts
from tests.factories import result


def lent(name: str, home: str, n: int = 1, in_flight: int = 0):
    return engines(name, n, start=10, in_flight=in_flight, home=home, since=0.0)


def test_idle_pool_lends_to_a_compatible_pool_with_queued_work():
    policy = PressurePolicy(warmup_s=0)
    c = ctx(50.0, load("gen", 1, work=4.0, queue=3), load("fix", 2, work=0.0))
    decisions, _ = policy.decide(c, policy.initial_state())
    assert [(d.kind, d.source, d.target) for d in decisions] == [
        (DecisionKind.LEND, "fix", "gen")] * 2                    # idle: even its last one
    other_model = ctx(50.0, load("gen", 1, work=4.0, queue=3),
                      load("fix", 2, work=0.0, model="other"))
    assert policy.decide(other_model, policy.initial_state())[0] == []


def test_no_lending_when_kv_memory_is_full_or_pool_busy():
    policy = PressurePolicy(warmup_s=0, lend_max_kv_usage=0.5)
    full = tuple(e._replace(kv_usage=0.9) for e in engines("fix", 2))
    c = ctx(50.0, load("gen", 1, work=4.0, queue=3), load("fix", work=0.0, engine_list=full))
    assert policy.decide(c, policy.initial_state())[0] == []
    busy = ctx(50.0, load("gen", 1, work=4.0, queue=3), load("fix", 2, work=1.0))
    decisions = policy.decide(busy, policy.initial_state())[0]
    assert decisions and {d.kind for d in decisions} == {DecisionKind.MOVE}  # busy: moves


def test_lent_engine_returns_when_the_lender_queue_grows():
    policy = PressurePolicy(warmup_s=0)
    gen = load("gen", work=6.0, queue=2, engine_list=engines("gen", 1) + lent("fix", "fix"))
    fix = load("fix", 1, work=2.0, queue=1, lent_out=("fix10",))
    (d,) = policy.decide(ctx(60.0, gen, fix), policy.initial_state())[0]
    assert (d.kind, d.engine_id, d.source, d.target) == (DecisionKind.RETURN, "fix10", "gen",
                                                         "fix")
    assert "lender fix has 1 queued" in d.reason


def test_lent_engine_returns_when_the_borrower_is_done():
    policy = PressurePolicy(warmup_s=0)
    gen = load("gen", work=0.0, engine_list=engines("gen", 1) + lent("fix", "fix"))
    fix = load("fix", 1, work=0.0, lent_out=("fix10",))
    (d,) = policy.decide(ctx(60.0, gen, fix), policy.initial_state())[0]
    assert d.kind is DecisionKind.RETURN and "borrower gen is idle" in d.reason


def test_a_borrowed_engine_is_never_moved_away():
    policy = PressurePolicy(warmup_s=0, confirm_steps=1)
    gen = load("gen", work=1.0, engine_list=lent("fix", "fix", n=3))
    fix = load("fix", 1, work=0.0, lent_out=("fix10", "fix11", "fix12"))
    third = load("third", 1, work=40.0)
    decisions = policy.decide(ctx(60.0, gen, fix, third), policy.initial_state())[0]
    assert all(d.kind is not DecisionKind.MOVE for d in decisions)


def test_idle_pool_lends_its_last_engine_and_recalls_it_at_once():
    c = malleable_controller(num_gen=1, num_fix=1)   # gen: e0, fix: e1
    lend = Decision(DecisionKind.LEND, "e1", "fix", "gen", "fix idle")
    assert c.allocator.begin(lend, 0.0)
    c.tick(0.0)
    assert c.engine_pool["e1"] == "gen"
    _, acts = c.admit("loop", {"q": "a"}, 0.1)
    _, more = c.admit("loop", {"q": "b"}, 0.1)
    gen_a, gen_b = starts(acts) + starts(more)
    assert {gen_a.engine_id, gen_b.engine_id} == {"e0", "e1"}     # both serve generate
    on_e1 = gen_a if gen_a.engine_id == "e1" else gen_b
    on_e0 = gen_b if on_e1 is gen_a else gen_a

    (check,) = starts(c.complete(on_e0.call, result(text="x"), 0.5))
    acts = c.complete(check.call, result("error"), 0.6)           # a fix call is queued ...
    assert starts(acts) == []                                     # ... with fix's engine away
    back = c.allocator.records[-1]
    assert back.decision.kind is DecisionKind.RETURN and back.begun_at == 0.6
    acts = c.complete(on_e1.call, result(text="x"), 0.9)          # borrower's call finishes
    fix_starts = [s for s in starts(acts) if s.call.stage.name == "fix"]
    assert [s.engine_id for s in fix_starts] == ["e1"] and c.engine_pool["e1"] == "fix"


def test_allocator_with_policy_lends_then_returns():
    allocator = Allocator(AllocatorConfig(policy_options={"lend_after_s": 0.0}))
    c = malleable_controller(num_gen=1, num_fix=1, allocator=allocator)
    for i in range(3):
        c.admit("loop", {"q": str(i)}, 0.0)                       # gen: 1 running, 2 queued
    for t in (1.0, 2.0, 3.0):
        c.tick(t)
    kinds = [r.decision.kind for r in allocator.records]
    assert kinds == [DecisionKind.LEND] and c.engine_pool["e1"] == "gen"

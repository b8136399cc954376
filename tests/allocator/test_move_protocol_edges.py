"""Move-protocol edge cases found in review: engine failures during moves, loans and
scale-in, and one engine named twice in a step. Each failed before its fix."""
from __future__ import annotations

from cortex.allocator import Decision, DecisionKind
from tests.allocator.alloc_factories import malleable_controller, starts
from tests.factories import result


def test_failure_retry_is_not_stranded_by_a_move_draining_the_only_other_engine():
    # gen: e0, e1; fix: e2. e0 is draining toward fix with a call in flight when e1
    # dies. The retry of e1's call must not end up queued in a pool with no engine.
    c = malleable_controller(num_gen=2, num_fix=1)
    _, acts_a = c.admit("loop", {"q": "a"}, 0.0)
    run_b, acts_b = c.admit("loop", {"q": "b"}, 0.0)
    on = {s.engine_id: s.call for s in starts(acts_a) + starts(acts_b)}
    assert set(on) == {"e0", "e1"}
    c.begin_move("e0", "fix", 0.1)                                   # e0 drains
    assert starts(c.fail_call(on["e1"], "engine died", 0.2)) == []  # retried: queued in gen
    c.complete(on["e0"], result(text="x"), 0.3)                     # e0's call finishes
    gen = c.pools["gen"]
    stranded = gen.queue_depth > 0 and not [
        e for e in gen.healthy_engines() if e not in c.allocator._draining]
    assert not stranded, (
        f"gen has {gen.queue_depth} queued call(s) (the retry of {on['e1'].call_id}) but "
        f"engines {gen.engine_ids}, healthy {gen.healthy_engines()}; e0 now in "
        f"{c.engine_pool['e0']!r}; run_b {run_b.status}")
    (record,) = c.allocator.records
    assert record.done_at == 0.2 and "no other active engine" in record.cancelled  # at once
    assert c.engine_pool["e0"] == "gen" and gen.in_flight("e0") == 1  # serves the retry


def test_lent_last_engine_is_recalled_even_if_the_borrower_would_be_left_idle_and_empty():
    # gen: e0; fix: e1. fix lends its last engine (idle pool). gen's own e0 then fails.
    # Once gen has nothing left to do, fix's queued call must get its engine back.
    c = malleable_controller(num_gen=1, num_fix=1)
    assert c.allocator.begin(Decision(DecisionKind.LEND, "e1", "fix", "gen", "fix idle"), 0.0)
    c.tick(0.0)
    assert c.engine_pool["e1"] == "gen"
    _, acts_a = c.admit("loop", {"q": "a"}, 0.1)
    _, acts_b = c.admit("loop", {"q": "b"}, 0.1)
    on = {s.engine_id: s.call for s in starts(acts_a) + starts(acts_b)}
    assert set(on) == {"e0", "e1"}
    c.fail_call(on["e0"], "engine died", 0.2)                   # e0 unhealthy, retry queued
    acts = c.complete(on["e1"], result(text="x"), 0.3)
    by_stage = {s.call.stage.name: s for s in starts(acts)}
    assert by_stage["gen"].engine_id == "e1"                     # a's retry runs on e1
    c.complete(by_stage["check"].call, result("error"), 0.4)     # b needs a fix call
    acts = c.complete(by_stage["gen"].call, result(text="x"), 0.5)  # gen is now idle
    (check_a,) = [s for s in starts(acts) if s.call.stage.name == "check"]
    c.complete(check_a.call, result(), 0.6)                      # run a succeeds
    for t in (1.0, 2.0, 3.0):
        c.tick(t)
    fix, gen = c.pools["fix"], c.pools["gen"]
    assert gen.queue_depth == 0 and not any(gen.in_flight(e) for e in gen.engine_ids)  # idle
    queued = fix.queue_depth
    assert queued == 0, (
        f"fix has {queued} queued call(s) and engines {fix.engine_ids}; its lent "
        f"engine e1 stays in {c.engine_pool['e1']!r}; recall refused "
        f"{len(c.allocator.refused)} times: {c.allocator.refused[-1][2]!r}")


def test_a_borrower_never_gives_away_its_own_last_engine_so_the_loan_can_go_back():
    # gen: e0; fix: e1, e2. fix (idle) lends e2 to gen. fix then gets busy (its calls still
    # fit on e1: nothing queued) and is more pressed than gen. The policy must not move
    # gen's only own engine to fix: gen would live on fix's loan alone, and the loan could
    # then never go back (a RETURN would leave gen without an active engine).
    from cortex.allocator import PressurePolicy
    from cortex.allocator.types import EngineLoad
    from tests.allocator.alloc_factories import ctx, load

    c = malleable_controller(num_gen=1, num_fix=2)
    assert c.allocator.begin(Decision(DecisionKind.LEND, "e2", "fix", "gen", "fix idle"), 0.0)
    c.tick(0.0)
    assert c.engine_pool["e2"] == "gen"
    policy = PressurePolicy(warmup_s=0, confirm_steps=1)
    gen = load("gen", work=1.0, engine_list=(
        EngineLoad("e0", "gen", 1, float("-inf"), False, None),
        EngineLoad("e2", "fix", 1, 0.0, False, None)))
    fix = load("fix", work=3.0, engine_list=(
        EngineLoad("e1", "fix", 1, float("-inf"), False, None),), lent_out=("e2",))
    decisions, _ = policy.decide(ctx(100.0, gen, fix), policy.initial_state())
    assert not [d for d in decisions if d.kind is DecisionKind.MOVE and d.source == "gen"]
    # ... and were a policy to decide it, the allocator refuses it
    assert not c.allocator.begin(Decision(DecisionKind.MOVE, "e0", "gen", "fix", "by hand"),
                                 100.0)
    assert "without an active engine of its own" in c.allocator.refused[-1][2]
    for d in decisions:
        c.allocator.begin(d, 100.0)
    c.tick(100.5)
    own = [e for e in c.pools["gen"].engine_ids if c.allocator.assignment[e].home == "gen"]
    back = c.allocator.begin(Decision(DecisionKind.RETURN, "e2", "gen", "fix", "fix queues"),
                             101.0)
    assert own and back, (
        f"decisions {[(d.kind.value, d.engine_id, d.source, d.target) for d in decisions]}; "
        f"gen now holds {c.pools['gen'].engine_ids} (own: {own}); RETURN of e2 refused: "
        f"{c.allocator.refused[-1][2]!r}")


def test_allocator_refuses_to_retire_a_borrowed_engine_whose_home_lent_its_last_one():
    # fix's only engine is a provider-started s0, lent to gen while fix is idle. Retiring
    # it where it serves would leave fix with nothing to recall: its next call waits forever.
    from cortex.allocator import Allocator, AllocatorConfig
    from cortex.allocator.scaling import SimEngineProvider
    from cortex.engine.sim import SimEngine, SimEngineConfig

    sims: dict[str, SimEngine] = {}
    provider = SimEngineProvider(sims, SimEngineConfig(kv_capacity_tokens=4096),
                                 max_engines=8, startup_s=0.0)
    alloc = Allocator(AllocatorConfig("static"), provider=provider)
    c = malleable_controller(num_gen=2, num_fix=1, allocator=alloc)   # gen e0 e1, fix e2
    c.tick(0.0)
    assert alloc.begin(Decision(DecisionKind.SCALE_OUT, "", "", "fix", "test"), 0.0)
    c.tick(1.0)
    (s0,) = [e for e in c.pools["fix"].engine_ids if e != "e2"]
    c.begin_move("e2", "gen", 1.0)                       # fix keeps only s0
    assert alloc.begin(Decision(DecisionKind.LEND, s0, "fix", "gen", "fix idle"), 1.0)
    c.tick(1.0)
    assert c.engine_pool[s0] == "gen" and c.pools["fix"].engine_ids == []
    retired = alloc.begin(Decision(DecisionKind.SCALE_IN, s0, "gen", "", "gen idle"), 2.0)
    c.tick(2.0)
    _, acts = c.admit("loop", {"q": "a"}, 3.0)
    (gen,) = starts(acts)
    (check,) = starts(c.complete(gen.call, result(text="x"), 3.5))
    c.complete(check.call, result("error"), 3.6)         # a fix call is queued
    for t in (4.0, 5.0, 6.0):
        c.tick(t)
    queued, fix_engines = c.pools["fix"].queue_depth, c.pools["fix"].engine_ids
    assert not (queued and not fix_engines), (
        f"SCALE_IN of borrowed {s0} accepted={retired}; fix has {queued} queued "
        f"call(s) and no engine, and no lent engine to recall")


def test_policy_never_names_one_engine_in_two_decisions_of_a_step():
    # fix has been idle 40 s with a configured engine and a provider-started one; gen has
    # queued work. One step lends fix's idle engines to gen *and* retires the started one.
    from cortex.allocator import PressurePolicy, PressureState
    from tests.allocator.alloc_factories import ctx, engines, load

    policy = PressurePolicy(warmup_s=0, scale_in_idle_s=30.0, scale_cooldown_s=0.0)
    started = engines("fix", 1, start=5)[0]._replace(can_retire=True)
    fix = load("fix", work=0.0, engine_list=engines("fix", 1) + (started,))
    gen = load("gen", 1, work=2.0, queue=3)
    state = PressureState(idle_since=(("fix", 0.0),), started_at=0.0)
    decisions, _ = policy.decide(ctx(40.0, gen, fix), state)
    named = [d.engine_id for d in decisions if d.engine_id]
    assert len(named) == len(set(named)), [(d.kind.value, d.engine_id) for d in decisions]

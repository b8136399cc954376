"""The two-phase move: drain (router stops sending), in-flight finish, reassign."""
from __future__ import annotations

import pytest

from cortex.allocator import Decision, DecisionKind
from cortex.core import OK, RunStatus
from tests.allocator.alloc_factories import malleable_controller, starts
from tests.factories import result


def test_drain_then_reassign_loses_and_duplicates_nothing():
    c = malleable_controller(num_gen=2, num_fix=1)
    started: list[str] = []
    run_a, acts = c.admit("loop", {"q": "a"}, 0.0)
    run_b, more = c.admit("loop", {"q": "b"}, 0.0)
    gen_a, gen_b = starts(acts) + starts(more)
    started += [gen_a.call.call_id, gen_b.call.call_id]
    assert {gen_a.engine_id, gen_b.engine_id} == {"e0", "e1"}

    moving = gen_a.engine_id
    assert c.begin_move(moving, "fix", 0.1) == []
    assert c.pools["gen"].snapshot().engine_ids == ("e0", "e1")   # still there, draining
    run_c, acts = c.admit("loop", {"q": "c"}, 0.2)
    assert starts(acts) == []                                     # not sent to the draining one

    acts = c.complete(gen_a.call, result(text="x"), 1.0)          # its in-flight call finishes
    assert c.engine_pool[moving] == "fix"
    assert moving in c.pools["fix"].engine_ids and moving not in c.pools["gen"].engine_ids
    assert [s.call.stage.name for s in starts(acts)] == ["check"]  # C still waits for gen
    pending = starts(acts)

    acts = c.complete(gen_b.call, result(text="x"), 1.1)
    pending += starts(acts)
    assert [s.engine_id for s in starts(acts) if s.call.stage.name == "gen"] == [gen_b.engine_id]
    record = c.allocator.records[0]
    assert record.decision.kind is DecisionKind.MOVE and record.done_at == 1.0
    t = 2.0
    while pending:  # finish every run: nothing was lost, nothing started twice
        s = pending.pop(0)
        started.append(s.call.call_id)
        pending += starts(c.complete(s.call, result(OK, text="x"), t))
        t += 0.1
    assert len(started) == len(set(started)) == 3 * 2
    assert {r.status for r in (run_a, run_b, run_c)} == {RunStatus.SUCCEEDED}


def test_never_takes_the_last_engine_of_a_pool():
    c = malleable_controller(num_gen=2, num_fix=1)
    with pytest.raises(ValueError, match="without an active engine"):
        c.begin_move("e2", "gen", 0.0)
    c.begin_move("e0", "fix", 0.0)                                # idle: moves at once
    c.admit("loop", {"q": "a"}, 0.1)
    assert c.engine_pool["e0"] == "fix"
    with pytest.raises(ValueError, match="without an active engine"):
        c.begin_move("e1", "fix", 0.2)


def test_refuses_engines_not_where_the_decision_says():
    c = malleable_controller()
    ok = c.allocator.begin(Decision(DecisionKind.MOVE, "e0", "fix", "gen", "wrong source"), 0.0)
    assert not ok and "not an idle member" in c.allocator.refused[-1][2]
    ok = c.allocator.begin(Decision(DecisionKind.RETURN, "e0", "gen", "fix", "not lent"), 0.0)
    assert not ok and "belongs to 'gen'" in c.allocator.refused[-1][2]


def test_unhealthy_engine_stays_unhealthy_after_a_move():
    c = malleable_controller(num_gen=3, num_fix=1)
    c.set_engine_health("e1", False, 0.0)
    c.allocator.begin(Decision(DecisionKind.MOVE, "e1", "gen", "fix", "test"), 0.0)
    c.tick(0.0)
    assert c.engine_pool["e1"] == "fix" and "e1" not in c.pools["fix"].healthy_engines()


def test_moved_engine_is_accounted_cold_in_its_new_pool():
    c = malleable_controller(num_gen=2, num_fix=1)
    c.begin_move("e0", "fix", 0.0)
    _, acts = c.admit("loop", {"q": "a"}, 0.1)
    (gen,) = starts(acts)
    (check,) = starts(c.complete(gen.call, result(text="x"), 0.5))
    (fix,) = starts(c.complete(check.call, result("error"), 0.6))
    c.complete(fix.call, result(text="y"), 1.0)
    cold = c.allocator.cold
    if fix.engine_id == "e0":
        assert cold["fix"].num_calls == 1 and cold["fix"].prompt_tokens == 10
    else:
        assert "fix" not in cold
    assert "gen" not in cold                                      # e1 never moved

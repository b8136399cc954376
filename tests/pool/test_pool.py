from __future__ import annotations

import pytest

from cortex.pool.placement import build_layout, expected_stage_work, split_engines
from cortex.pool.pool import LateOrder, StagePool
from cortex.pool.router import ROUTERS, Candidate, PrefixAffinityRouter
from cortex.pool.scheduler import SCHEDULERS
from tests.factories import FakeView, loop_workflow, make_call


def pool(scheduler="fcfs", router="least_loaded", views=(), max_queue=8, late=None, **kw):
    p = StagePool("p", ("gen",), SCHEDULERS.get(scheduler), ROUTERS.get(router)(**kw),
                  max_queue=max_queue, late=late)
    for v in views:
        p.add_engine(v)
    return p


def test_fcfs_orders_by_arrival():
    p = pool(views=[FakeView("e0")])
    for i, t in enumerate([3.0, 1.0, 2.0]):
        p.submit(make_call(f"c{i}"), t)
    assert [c.call_id for c in p.queued()] == ["c1", "c2", "c0"]


def test_slack_orders_least_slack_first_then_shorter_service():
    p = pool("slack", views=[FakeView("e0")])
    p.submit(make_call("loose", slack_key=9.0), 0.0)
    p.submit(make_call("tight_long", slack_key=2.0, expected_s=5.0), 0.1)
    p.submit(make_call("tight_short", slack_key=2.0, expected_s=1.0), 0.2)
    assert [c.call_id for c in p.queued()] == ["tight_short", "tight_long", "loose"]
    (d,) = p.dispatch(1.0)
    assert d.call.call_id == "tight_short" and d.call.started_at == 1.0


def test_late_last_serves_calls_that_can_still_meet_their_slo_first():
    # At t=10: "lost" has slack -8 (< -1 x its 1 s service), "late_ok" -0.5 (viable),
    # "fresh" +5. Strict least-slack order would serve "lost" first.
    strict = pool("slack", views=[FakeView("e0")])
    late_last = pool("slack", views=[FakeView("e0")], late=LateOrder(1.0))
    for p in (strict, late_last):
        p.submit(make_call("fresh", slack_key=15.0, expected_s=1.0), 0.0)
        p.submit(make_call("lost", slack_key=2.0, expected_s=1.0), 0.1)
        p.submit(make_call("late_ok", slack_key=9.5, expected_s=1.0), 0.2)
    assert [d.call.call_id for d in strict.dispatch(10.0)] == ["lost"]
    (first,) = late_last.dispatch(10.0)
    assert first.call.call_id == "late_ok"
    # Nothing is dropped, the queue stays in scheduler order, and a lost call is
    # still served once no viable call waits.
    assert [c.call_id for c in late_last.queued()] == ["lost", "fresh"]
    served = []
    for call in (first.call, None):
        late_last.finished(call or served[-1], 0, 0, 0.0)
        (d,) = late_last.dispatch(10.0)
        served.append(d.call)
    assert [c.call_id for c in served] == ["fresh", "lost"] and late_last.queue_depth == 0


def test_late_last_when_tipped_defers_late_calls_only_while_most_of_the_queue_is_late(
        monkeypatch):
    # At t=10 a call submitted with slack_key 2 has slack -8: past -1 x its 1 s service.
    monkeypatch.setattr(StagePool, "TIP_MIN_QUEUE", 4)
    p = pool("slack", views=[FakeView("e0")], late=LateOrder(1.0, when_tipped=True))
    p.submit(make_call("lost", slack_key=2.0), 0.0)
    for i in range(3):
        p.submit(make_call(f"fresh{i}", slack_key=15.0 + i), 0.1)
    # one late call in four: not tipped, strict least-slack order serves it first
    assert [d.call.call_id for d in p.dispatch(10.0)] == ["lost"] and not p.tipped
    p.finished(p.dispatched("e0")[0], 0, 0, 0.0)
    for i in range(3):
        p.submit(make_call(f"lost{i}", slack_key=1.0 + i), 0.2)
    # three late calls of six: tipped, the calls that can still make it go first
    assert [d.call.call_id for d in p.dispatch(10.0)] == ["fresh0"] and p.tipped
    p.finished(p.dispatched("e0")[0], 0, 0, 0.0)
    assert [d.call.call_id for d in p.dispatch(10.0)] == ["fresh1"] and p.tipped
    # the late calls are served once nothing viable waits; with none left queued the pool
    # goes back to strict order
    for expected in ("fresh2", "lost0", "lost1", "lost2"):
        p.finished(p.dispatched("e0")[0], 0, 0, 0.0)
        assert [d.call.call_id for d in p.dispatch(10.0)] == [expected]
    p.finished(p.dispatched("e0")[0], 0, 0, 0.0)
    assert p.dispatch(10.0) == [] and not p.tipped
    p.submit(make_call("late_again", slack_key=3.0), 10.0)
    p.submit(make_call("fresh3", slack_key=20.0), 10.0)
    assert [d.call.call_id for d in p.dispatch(10.0)] == ["late_again"] and not p.tipped


def test_bounded_queue_refuses():
    p = pool(views=[FakeView("e0")], max_queue=2)
    assert p.submit(make_call("a"), 0) and p.submit(make_call("b"), 0)
    assert not p.submit(make_call("c"), 0)
    assert p.stats.num_rejected == 1


def test_round_robin_and_least_loaded():
    views = [FakeView("e0", max_concurrency=2), FakeView("e1", max_concurrency=2)]
    p = pool(router="round_robin", views=views)
    for i in range(3):
        p.submit(make_call(f"c{i}"), 0)
    assert [d.engine_id for d in p.dispatch(0)] == ["e0", "e1", "e0"]
    p = pool(router="least_loaded", views=views)
    for i in range(3):
        p.submit(make_call(f"c{i}"), 0)
    assert [d.engine_id for d in p.dispatch(0)] == ["e0", "e1", "e0"]


def test_prefix_affinity_prefers_longest_cached_prefix():
    router = PrefixAffinityRouter(load_bound=2)
    cands = [Candidate("e0", 0, 1, 0), Candidate("e1", 1, 1, 300)]
    assert router.choose(cands, make_call()) == "e1"


def test_prefix_affinity_falls_back_when_load_exceeds_bound():
    router = PrefixAffinityRouter(load_bound=2)
    cands = [Candidate("e0", 0, 1, 0), Candidate("e1", 3, 1, 300)]
    assert router.choose(cands, make_call()) == "e0"


def test_prefix_affinity_waits_for_busy_warm_engine_within_bound():
    router = PrefixAffinityRouter(load_bound=2)
    cands = [Candidate("e0", 0, 1, 0), Candidate("e1", 1, 0, 300)]
    assert router.choose(cands, make_call()) == "e1"  # busy: the pool keeps the call queued


def test_pool_affinity_spills_after_bound_of_waiting_calls():
    p = pool(router="prefix_affinity", views=[FakeView("warm", cached=100), FakeView("cold")],
             load_bound=1)
    for i in range(4):
        p.submit(make_call(f"c{i}", tokens=list(range(200))), float(i))
    out = p.dispatch(5.0)
    # c0 -> warm; c1 waits for warm (load 1 vs 0 within bound); c2 sees warm load 2 -> cold
    assert [(d.call.call_id, d.engine_id) for d in out] == [("c0", "warm"), ("c2", "cold")]
    assert [c.call_id for c in p.queued()] == ["c1", "c3"]


def test_unhealthy_and_draining_engines_get_nothing():
    p = pool(views=[FakeView("e0"), FakeView("e1")])
    p.set_healthy("e0", False)
    p.submit(make_call("a"), 0)
    p.submit(make_call("b"), 0)
    assert [d.engine_id for d in p.dispatch(0)] == ["e1"]
    p.set_draining("e1", True)
    assert p.dispatch(1) == []


def test_finished_frees_slot_and_accounts_tokens():
    p = pool(views=[FakeView("e0")])
    p.submit(make_call("a"), 0)
    p.submit(make_call("b"), 0)
    (d,) = p.dispatch(0)
    assert p.dispatch(0) == []
    p.finished(d.call, 100, 60, 0.5)
    assert [x.call.call_id for x in p.dispatch(1)] == ["b"]
    assert p.stats.prefix_hit_rate == pytest.approx(0.6)


def test_pool_knows_which_calls_each_engine_holds_until_they_end():
    p = pool(views=[FakeView("e0", max_concurrency=3)])
    for name in ("a", "b", "c"):
        p.submit(make_call(name), 0)
    a, b, c = (d.call for d in p.dispatch(0))
    assert [x.call_id for x in p.dispatched("e0")] == ["a", "b", "c"]  # dispatch order
    p.finished(b, 10, 0, 0.1)
    p.finished(b, 10, 0, 0.1)            # a second report of one call frees nothing more
    assert [x.call_id for x in p.dispatched("e0")] == ["a", "c"] and p.in_flight("e0") == 2
    with pytest.raises(RuntimeError, match="2 calls in flight"):
        p.remove_engine("e0")
    p.finished(a, 10, 0, 0.1)
    p.finished(c, 10, 0, 0.1)
    assert p.dispatched("e0") == [] and p.remove_engine("e0").engine_id == "e0"


def test_split_engines_by_expected_work():
    assert split_engines({"gen": 3.0, "fix": 1.0}, 4) == {"gen": 3, "fix": 1}
    assert split_engines({"gen": 10.0, "fix": 0.1}, 2) == {"gen": 1, "fix": 1}
    with pytest.raises(ValueError, match="at least one engine per LLM stage"):
        split_engines({"gen": 1.0, "fix": 1.0}, 1)


def test_layouts_per_policy():
    wf = loop_workflow()
    shared = build_layout("shared-fcfs", wf, 4)
    assert [(p.name, p.stages, p.num_engines, p.scheduler, p.router) for p in shared.pools] == [
        ("llm", ("gen", "fix"), 4, "fcfs", "least_loaded"),
        ("tools", ("check",), 8, "fcfs", "least_loaded")]
    assert build_layout("shared-prefix", wf, 4).pools[0].router == "prefix_affinity"
    work = expected_stage_work(wf, {"gen": 1.0, "fix": 1.0},
                               {"check": {"ok": 0.5, "error": 0.5}})
    assert work["fix"] == pytest.approx(work["gen"] * 0.75, rel=0.1)  # 0.5 + 0.25 (budget 2)
    iso = build_layout("cortex", wf, 4, work)
    assert {p.name: (p.num_engines, p.scheduler) for p in iso.pools if p.name != "tools"} == {
        "gen": (2, "slack"), "fix": (2, "slack")}
    with pytest.raises(KeyError, match="unknown placement policy"):
        build_layout("nope", wf, 4)


def test_prefix_affinity_asks_engines_about_the_requests_model():
    class ModelAware(FakeView):               # the simulated engine's signature
        def cached_prefix_len(self, tokens, hashes=None, model=None):
            assert hashes is None             # the model must not land in ``hashes``
            self.asked = model
            return min(self.cached, len(tokens))

    warm, cold = ModelAware("warm", cached=50), ModelAware("cold")
    p = pool(router="prefix_affinity", views=[cold, warm])
    call = make_call("light", tokens=list(range(64)))
    call.request.model = "gemma3-270m"        # set by a model knob
    p.submit(call, 0.0)
    assert [d.engine_id for d in p.dispatch(0.0)] == ["warm"]
    assert warm.asked == cold.asked == "gemma3-270m"


@pytest.mark.parametrize("factor", [-1.0, float("nan"), True, "1"])
def test_late_order_refuses_a_factor_that_is_not_a_number_at_least_zero(factor):
    with pytest.raises(ValueError, match="late-last factor must be a number >= 0"):
        LateOrder(factor)


class MemoryView(FakeView):
    """A view that reports its KV room (``kv_room_tokens``) and the calls it holds but
    cannot run yet (``num_waiting``), as a simulated engine does."""

    def __init__(self, engine_id: str, room: int, cached: int = 0, waiting: int = 0,
                 max_concurrency: int = 16) -> None:
        super().__init__(engine_id, cached, max_concurrency)
        self.room, self.num_waiting = room, waiting

    def kv_room_tokens(self) -> int:
        return self.room


def memory_call(call_id: str, prompt: int, slack_key: float = 0.0):
    call = make_call(call_id, slack_key=slack_key, tokens=list(range(prompt)))
    call.request.params.max_tokens = 100
    return call


def test_hold_for_memory_keeps_calls_in_the_pool_until_the_engine_can_run_them():
    view = MemoryView("e0", room=700)
    p = pool("slack", views=[view])
    p.hold_for_memory = True
    p.submit(memory_call("a", 400, slack_key=1.0), 0.0)   # needs 500 tokens
    p.submit(memory_call("b", 400, slack_key=2.0), 0.0)   # 500 more: does not fit
    assert [d.call.call_id for d in p.dispatch(0.0)] == ["a"]
    assert [c.call_id for c in p.queued()] == ["b"]
    view.room = 200  # the engine took a
    # A tighter call arrives while memory is short: it overtakes b when memory frees,
    # which the engine's own first-come queue could not have done.
    p.submit(memory_call("urgent", 400, slack_key=0.5), 0.1)
    assert p.dispatch(0.2) == []
    p.finished(p.dispatched("e0")[0], 400, 0, 1.0)
    view.room = 700
    assert [d.call.call_id for d in p.dispatch(1.0)] == ["urgent"]
    assert [c.call_id for c in p.queued()] == ["b"]  # nothing is dropped


def test_without_hold_for_memory_every_free_slot_takes_a_call():
    p = pool("slack", views=[MemoryView("e0", room=700)])
    for name in ("a", "b", "c"):
        p.submit(memory_call(name, 400), 0.0)
    assert len(p.dispatch(0.0)) == 3


def test_hold_for_memory_counts_the_cached_prefix_and_spares_idle_and_silent_engines():
    warm = MemoryView("warm", room=300, cached=400)    # 400 cached: needs 0 + 100
    idle = MemoryView("idle", room=0)                  # nothing in flight: always one call
    silent = FakeView("silent", max_concurrency=4)     # reports no room: unaffected
    for views, expected in (([warm], ["a", "b", "c"]), ([idle], ["a"]),
                            ([silent], ["a", "b", "c"])):
        p = pool(views=views)
        p.hold_for_memory = True
        for name in ("a", "b", "c"):
            p.submit(memory_call(name, 400), 0.0)
        assert [d.call.call_id for d in p.dispatch(0.0)] == expected, views[0].engine_id


def test_hold_for_memory_sends_nothing_to_an_engine_already_holding_calls():
    busy = MemoryView("busy", room=10_000, waiting=2)
    free = MemoryView("free", room=10_000)
    p = pool(views=[busy, free])
    p.hold_for_memory = True
    p.submit(memory_call("a", 400), 0.0)
    p.submit(memory_call("b", 400), 0.0)
    p.dispatch(0.0)   # busy is empty of calls here: it may take one
    p.submit(memory_call("c", 400), 0.0)
    assert [d.engine_id for d in p.dispatch(0.1)] == ["free"]

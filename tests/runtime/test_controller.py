from __future__ import annotations

from cortex.controller import CancelCall, Controller, RunFinished, StartCall
from cortex.core import OK, EngineRequest, RunStatus
from cortex.pool.placement import build_layout
from tests.factories import FakeView, loop_workflow, orchestrator, result


def controller(policy="cortex", engines=2, max_queue=16):
    wf = loop_workflow()
    layout = build_layout(policy, wf, engines)
    pools = [p for p in layout.pools if p.name != "tools"]
    views, n = {}, 0
    for p in pools:
        views[p.name] = [FakeView(f"e{n + i}") for i in range(p.num_engines)]
        n += p.num_engines
    prepare = lambda call: EngineRequest(call.call_id, prompt_tokens=[1, 2, 3])
    return Controller(orchestrator(wf), layout, views, prepare, max_queue=max_queue)


def starts(actions):
    return [a for a in actions if isinstance(a, StartCall)]


def test_run_flows_through_pools_to_success():
    c = controller()
    run, actions = c.admit("loop", {"q": "x"}, 0.0)
    (gen,) = starts(actions)
    assert gen.call.pool == "gen" and gen.engine_id == "e0"
    (check,) = starts(c.complete(gen.call, result(text="a"), 1.0))
    assert check.call.pool == "tools"
    actions = c.complete(check.call, result(OK), 1.1)
    assert RunFinished(run) in actions and run.status is RunStatus.SUCCEEDED
    assert c.pools["gen"].stats.num_calls == 1


def test_engine_failure_retried_once_on_another_engine():
    c = controller("shared-fcfs", engines=2)
    run, actions = c.admit("loop", {"q": "x"}, 0.0)
    (first,) = starts(actions)
    (retry,) = starts(c.fail_call(first.call, "worker died", 0.5))
    assert retry.call is first.call and retry.engine_id != first.engine_id
    assert first.engine_id not in c.pools["llm"].healthy_engines()
    # second failure: no more retries -> the stage errors and the run fails with the reason
    actions = c.fail_call(retry.call, "worker died again", 0.7)
    assert RunFinished(run) in actions and run.status is RunStatus.FAILED
    assert "worker died again" in run.reason and "after one retry" in run.reason


def test_failure_with_no_other_engine_fails_run():
    c = controller("shared-fcfs", engines=1)
    run, actions = c.admit("loop", {"q": "x"}, 0.0)
    (first,) = starts(actions)
    c.fail_call(first.call, "boom", 0.1)
    assert run.status is RunStatus.FAILED and "engine e0 failed: boom" in run.reason


def test_full_queue_rejects_run_with_reason():
    c = controller("shared-fcfs", engines=1, max_queue=1)
    c.admit("loop", {"q": "a"}, 0.0)           # dispatched
    c.admit("loop", {"q": "b"}, 0.0)           # queued
    run, actions = c.admit("loop", {"q": "c"}, 0.0)
    assert RunFinished(run) in actions and run.status is RunStatus.REJECTED
    assert "queue is full" in run.reason and "'llm'" in run.reason
    (entry,) = run.trace  # the refused call is kept, outcome rejected, like the events
    assert entry.outcome == "rejected" and entry.pool == "llm" and not entry.ran


def test_cancel_running_call_frees_slot_and_ignores_late_result():
    c = controller("shared-fcfs", engines=1)
    run, actions = c.admit("loop", {"q": "a"}, 0.0)
    (gen,) = starts(actions)
    other, queued = c.admit("loop", {"q": "b"}, 0.0)
    assert starts(queued) == []
    actions = c.cancel_run(run.run_id, 0.5)
    assert CancelCall(gen.call) in actions
    (nxt,) = starts(actions)
    assert nxt.call.run_id == other.run_id
    assert c.complete(gen.call, result(), 0.6) == []
    assert c.pools["llm"].in_flight("e0") == 1


def test_a_failed_call_whose_retry_finds_the_queue_full_fails_without_a_retry():
    c = controller("shared-fcfs", engines=2, max_queue=1)
    run, actions = c.admit("loop", {"q": "a"}, 0.0)
    (first,) = starts(actions)
    c.admit("loop", {"q": "b"}, 0.0)           # on the other engine
    c.admit("loop", {"q": "c"}, 0.0)           # fills the queue
    c.fail_call(first.call, "boom", 0.1)
    assert run.status is RunStatus.FAILED and first.call.num_retries == 0
    assert "(after one retry)" not in run.reason and first.call.engine_id == "e0"

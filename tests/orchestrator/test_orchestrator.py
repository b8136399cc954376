from __future__ import annotations

import pytest

from cortex.core import ERROR, OK, RunStatus
from tests.factories import loop_workflow, orchestrator, result


def start(budget=2, fanout=1, join="first_ok", slo_s=10.0):
    orch = orchestrator(loop_workflow(budget, fanout, join))
    run, step = orch.admit("loop", {"q": "hi"}, now=0.0, slo_s=slo_s)
    return orch, run, step


def test_happy_path_succeeds_with_trace():
    orch, run, step = start()
    (gen,) = step.calls
    assert gen.stage.name == "gen" and gen.args["user"] == "hi"
    (check,) = orch.complete(gen, result(text="42"), 1.0).calls
    assert check.args == {"answer": "42"}
    step = orch.complete(check, result(OK), 1.5)
    assert step.finished == [run] and run.status is RunStatus.SUCCEEDED
    assert [t.stage for t in run.trace] == ["gen", "check"]
    assert run.met_slo and run.latency_s == 1.5


def test_loop_budget_exhausted_fails_with_reason():
    orch, run, step = start(budget=2)
    call = orch.complete(step.calls[0], result(text="a"), 1.0).calls[0]
    stages = []
    for i in range(3):
        step = orch.complete(call, result(ERROR), 2.0 + i)
        if step.finished:
            break
        fix = step.calls[0]
        stages.append(fix.stage.name)
        call = orch.complete(fix, result(text="b"), 2.5 + i).calls[0]
    assert stages == ["fix", "fix"]
    assert run.status is RunStatus.FAILED
    assert "retry budget exhausted: check->fix" in run.reason
    assert run.visits == {"gen": 1, "check": 3, "fix": 2}


def test_fix_attempt_numbers_and_latest_output_used():
    orch, _, step = start()
    check = orch.complete(step.calls[0], result(text="bad"), 1.0).calls[0]
    fix = orch.complete(check, result(ERROR), 1.1).calls[0]
    assert fix.attempt == 1 and fix.args["user"] == "fix bad"
    check2 = orch.complete(fix, result(text="good"), 2.0).calls[0]
    assert check2.attempt == 2 and check2.args == {"answer": "good"}


def test_timeout_cancels_inflight():
    orch, run, step = start(slo_s=1.0)
    assert orch.next_timeout() == pytest.approx(5.0)
    assert orch.expire(4.9).finished == []
    out = orch.expire(5.0)
    assert out.finished == [run] and run.status is RunStatus.TIMED_OUT
    assert out.cancelled == step.calls
    # a late result is ignored
    assert orch.complete(step.calls[0], result(), 6.0).calls == []


def test_rejected_and_cancelled_are_terminal_once():
    orch, run, _ = start()
    assert orch.finish(run.run_id, RunStatus.REJECTED, "queue full", 0.1).finished == [run]
    assert run.status is RunStatus.REJECTED and run.reason == "queue full"
    assert orch.finish(run.run_id, RunStatus.CANCELLED, "again", 0.2).finished == []
    assert run.status is RunStatus.REJECTED


def test_stage_error_without_edge_fails():
    orch, run, step = start()
    step = orch.complete(step.calls[0], result(ERROR), 1.0)
    assert run.status is RunStatus.FAILED and "stage 'gen' failed" in run.reason


def test_unhandled_label_fails():
    orch, run, step = start()
    check = orch.complete(step.calls[0], result(text="a"), 1.0).calls[0]
    orch.complete(check, result("suspicious"), 1.1)
    assert run.status is RunStatus.FAILED
    assert "returned 'suspicious' and no edge handles it" in run.reason


def test_fanout_first_ok_cancels_losers():
    orch, _, step = start(fanout=3)
    a, b, c = step.calls
    assert orch.complete(a, result(ERROR), 1.0) == ([], [], [])
    out = orch.complete(b, result(text="win"), 1.2)
    assert out.cancelled == [c] and out.calls[0].args == {"answer": "win"}
    assert orch.complete(c, result(text="late"), 1.3).calls == []


def test_cancelled_calls_stay_in_the_trace():
    orch, run, step = start(slo_s=1.0)
    (gen,) = step.calls
    gen.started_at, gen.engine_id, gen.pool = 0.5, "e1", "p"
    orch.expire(5.0)
    (entry,) = run.trace
    assert (entry.call_id, entry.outcome, entry.engine_id) == (gen.call_id, "cancelled", "e1")
    assert entry.queue_wait_s == 0.5 and entry.usage.service_s == 4.5
    orch, run, step = start(fanout=3)
    a, b, c = step.calls
    orch.complete(a, result(text="win"), 1.0)
    assert [(t.call_id, t.outcome) for t in run.trace] == [
        (a.call_id, OK), (b.call_id, "cancelled"), (c.call_id, "cancelled")]
    assert run.trace[1].engine_id == "" and run.trace[1].queue_wait_s == 1.0


def test_fanout_first_ok_all_fail():
    orch, run, step = start(fanout=2)
    orch.complete(step.calls[0], result(ERROR), 1.0)
    orch.complete(step.calls[1], result(ERROR), 1.1)
    assert run.status is RunStatus.FAILED


def test_fanout_all_joins_outputs():
    orch, run, step = start(fanout=2, join="all")
    assert orch.complete(step.calls[0], result(text="x"), 1.0).calls == []
    orch.complete(step.calls[1], result(text="y"), 1.1)
    assert run.context["gen"] == {"results": [{"text": "x"}, {"text": "y"}]}
    # the next stage reads answer.text, which an `all` join does not produce
    assert run.status is RunStatus.FAILED and "answer.text" in run.reason


def test_slack_uses_learned_estimates():
    orch, run, step = start(slo_s=10.0)
    gen = step.calls[0]
    # prior: llm 1.0 s + tool 0.05 s on the likely path
    assert gen.slack(0.0) == pytest.approx(10.0 - 1.05)
    check = orch.complete(gen, result(service_s=3.0), 3.0).calls[0]
    assert orch.estimator.service_s(run.workflow, "gen") == pytest.approx(3.0)
    assert check.slack(3.0) == pytest.approx(10.0 - 3.0 - 0.05)


def test_bad_admission_inputs():
    orch, _, _ = start()
    with pytest.raises(KeyError, match="unknown workflow"):
        orch.admit("nope", {}, 0.0)
    with pytest.raises(ValueError, match="needs inputs: q"):
        orch.admit("loop", {}, 0.0)

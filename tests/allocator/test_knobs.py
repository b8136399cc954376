"""Knobs: turned cheapest-first when a run's slack goes negative, and recorded."""
from __future__ import annotations

import pytest
import yaml

from cortex.allocator.knobs import (
    Knob,
    KnobKind,
    KnobSet,
    load_knobs,
    nl2sql_knobs,
    parse_knobs,
    turned,
)
from cortex.core import RunStatus
from tests.allocator.alloc_factories import malleable_controller, starts
from tests.factories import compile_spec, loop_workflow, result

KNOBS = KnobSet((
    Knob("one-fix", KnobKind.RETRY_BUDGET, "fix", 1, 0.3),
    Knob("short-gen", KnobKind.MAX_TOKENS, "gen", 4, 0.1),
    Knob("short-fix", KnobKind.MAX_TOKENS, "fix", 3, 0.2),
))


def test_knob_set_orders_cheapest_first_and_checks_values():
    assert [k.name for k in KNOBS.knobs] == ["short-gen", "short-fix", "one-fix"]
    with pytest.raises(ValueError, match="duplicate"):
        KnobSet((KNOBS.knobs[0], KNOBS.knobs[0]))
    with pytest.raises(ValueError, match="integer >= 1"):
        Knob("bad", KnobKind.MAX_TOKENS, "gen", 0, 0.1)
    assert nl2sql_knobs().knobs[0].name == "short-sql"


def test_negative_slack_turns_cheapest_reachable_knobs_and_records_them():
    c = malleable_controller(num_gen=1, num_fix=1)
    c.orchestrator.knobs = {"loop": KNOBS}
    run, acts = c.admit("loop", {"q": "a"}, 0.0, slo_s=3.0)    # gen + check: 1.05 s expected
    (gen,) = starts(acts)
    assert turned(run) == [] and gen.call.request.params.max_tokens == 128  # slack >= 0
    (check,) = starts(c.complete(gen.call, result(text="x"), 0.5))
    (fix,) = starts(c.complete(check.call, result("error"), 2.5))         # late: slack < 0
    assert [t["knob"] for t in turned(run)] == ["short-fix"]              # short-gen is behind
    assert fix.call.request.params.max_tokens == 3
    assert fix.call.request.sim_quality_loss == pytest.approx(0.2)       # short-fix's cost
    assert gen.call.request.sim_quality_loss == 0.0
    (check,) = starts(c.complete(fix.call, result(text="y"), 3.0))    # still late at check:
    assert [t["knob"] for t in turned(run)] == ["short-fix", "one-fix"]  # fix is still ahead
    c.complete(check.call, result("error"), 3.5)
    assert run.status is RunStatus.FAILED and "max_traversals=1" in run.reason
    record = turned(run)[1]
    assert record["kind"] == "retry_budget" and record["at_s"] == 3.0 and record["slack_s"] < 0


def test_on_time_runs_turn_nothing():
    c = malleable_controller(num_gen=1, num_fix=1)
    c.orchestrator.knobs = {"loop": KNOBS}
    run, acts = c.admit("loop", {"q": "a"}, 0.0, slo_s=100.0)
    (gen,) = starts(acts)
    (check,) = starts(c.complete(gen.call, result(text="x"), 0.5))
    c.complete(check.call, result("ok"), 0.6)
    assert run.status is RunStatus.SUCCEEDED and turned(run) == []


def test_parse_knobs_names_the_bad_field():
    wf = loop_workflow()
    good = parse_knobs([{"name": "light", "stage": "fix", "model": "gemma3-270m", "cost": 0.5}],
                       wf, "agent.yaml")
    assert good.knobs[0].kind is KnobKind.MODEL
    with pytest.raises(ValueError, match=r"agent.yaml: knobs\[0\]: give exactly one"):
        parse_knobs([{"stage": "fix", "cost": 1}], wf, "agent.yaml")
    with pytest.raises(ValueError, match=r"knobs\[0\].stage: 'check' is not an LLM stage"):
        parse_knobs([{"stage": "check", "max_tokens": 3}], wf, "agent.yaml")
    with pytest.raises(ValueError, match=r"knobs\[0\]: knob 'max_tokens-fix'.*integer"):
        parse_knobs([{"stage": "fix", "max_tokens": "x"}], wf, "agent.yaml")


def test_load_knobs_reads_the_workflow_file(tmp_path):
    spec = {"name": "w", "inputs": ["q"], "stages": [
        {"name": "gen", "llm": {"user": "{{ q }}", "max_tokens": 8}}],
        "knobs": [{"stage": "gen", "max_tokens": 4, "cost": 0.2}]}
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(spec))
    wf = compile_spec(spec, source=str(path))
    (knob,) = load_knobs(wf).knobs
    assert (knob.name, knob.value, knob.cost) == ("max_tokens-gen", 4, 0.2)
    assert load_knobs(loop_workflow()).knobs == ()


def test_a_model_knob_needs_every_engine_of_its_pool_to_serve_the_model():
    from types import SimpleNamespace

    from cortex.runtime.build import PoolPlan, check_model_knobs

    light = KnobSet((Knob("light-fixer", KnobKind.MODEL, "fix", "gemma3-270m", 0.5),))
    both = SimpleNamespace(engine_id="e0", models=("smollm2-135m", "gemma3-270m"))
    one = SimpleNamespace(engine_id="e1", models=("smollm2-135m",))
    remote = SimpleNamespace(engine_id="r0")          # serves any name: not checked
    plan = lambda fixers: PoolPlan(None, {"p_fix": fixers}, {"fix": "p_fix"})
    check_model_knobs({"agent": light}, plan([both, remote]))
    with pytest.raises(ValueError, match=r"knob 'light-fixer'.*engines e1 of pool 'p_fix'"
                                         r".*extra_models"):
        check_model_knobs({"agent": light}, plan([both, one]))


def test_a_request_switched_to_another_model_gets_that_models_token_ids():
    from types import SimpleNamespace

    from cortex.controller import retokenize_for_model
    from cortex.core import EngineRequest

    def tokenize(request):
        return [len(request.model)] * 3          # stands in for the model's tokenizer

    smol = SimpleNamespace(engine_id="e0", models=("smollm2-135m",), tokenize=tokenize)
    both = SimpleNamespace(engine_id="e1", models=("smollm2-135m", "gemma3-270m"),
                           tokenize=tokenize)
    request = EngineRequest("c", messages=[{"role": "user", "content": "q"}],
                            model="gemma3-270m", prompt_tokens=[1, 2])
    retokenize_for_model(request, [smol, both])
    assert request.prompt_tokens == [11, 11, 11]   # e1's tokenizer, for gemma3-270m
    remote = SimpleNamespace(engine_id="r0", tokenize=tokenize)   # serves any name
    untouched = EngineRequest("d", messages=[{"role": "user", "content": "q"}],
                              model="x", prompt_tokens=[1, 2])
    retokenize_for_model(untouched, [remote])
    pretokenized = EngineRequest("s", prompt_tokens=[7], model="gemma3-270m")
    retokenize_for_model(pretokenized, [both])
    assert untouched.prompt_tokens == [1, 2] and pretokenized.prompt_tokens == [7]


def test_knob_costs_compound_into_the_requests_quality_loss_and_retry_budgets_add_none():
    from types import SimpleNamespace

    from cortex.allocator.knobs import apply_to_request, turn
    from cortex.core import EngineRequest

    run = SimpleNamespace(meta={}, arrival=0.0)
    for knob in (Knob("short", KnobKind.MAX_TOKENS, "fix", 8, 0.2),
                 Knob("light", KnobKind.MODEL, "fix", "gemma3-270m", 0.5),
                 Knob("one", KnobKind.RETRY_BUDGET, "fix", 1, 0.3),   # loses runs itself
                 Knob("gen", KnobKind.MAX_TOKENS, "gen", 8, 0.9)):    # another stage
        turn(run, knob, -1.0, 1.0)
    call = SimpleNamespace(stage=SimpleNamespace(name="fix"),
                           request=EngineRequest("c", prompt_tokens=[1], sim_output_tokens=20))
    apply_to_request(run, call)
    apply_to_request(run, call)                                        # idempotent
    assert call.request.sim_quality_loss == pytest.approx(1 - 0.8 * 0.5)
    assert call.request.model == "gemma3-270m" and call.request.sim_output_tokens == 8
    turn(run, Knob("wild", KnobKind.MAX_TOKENS, "fix", 4, 7.0), -1.0, 2.0)
    again = SimpleNamespace(stage=call.stage, request=EngineRequest("d", prompt_tokens=[1]))
    apply_to_request(run, again)
    assert again.request.sim_quality_loss == 1.0                       # clamped, not > 1

"""The ``planned`` policy: a split schedule, its checks, and the bench's planned split."""
from __future__ import annotations

import copy
import json

import pytest

from cortex.allocator import Allocator, AllocatorConfig, DecisionKind
from cortex.allocator.planned import PlannedPolicy, parse_plan
from cortex.bench.sim_bench import SimBenchConfig, planned_split, run_policy, run_sim_bench
from cortex.cli import main
from cortex.config import ConfigError, parse_config
from cortex.engine.sim import SimEngineConfig
from cortex.nl2sql.workflow import load_agent
from cortex.workload.nl2sql_sim import NL2SQLWorkload, NL2SQLWorkloadConfig, shifting
from tests.allocator.alloc_factories import ctx, engines, load, malleable_controller
from tests.allocator.test_deployment_config import _data

PLAN = [{"at_s": 0, "split": {"gen": 3, "fix": 1}}, {"at_s": 10, "split": {"gen": 1, "fix": 3}}]


def pools(gen: int = 3, fix: int = 1, busy: int = 0, model: str = "m"):
    gen_engines = tuple(e._replace(in_flight=busy if i == 0 else 0)
                        for i, e in enumerate(engines("gen", gen)))
    return load("gen", engine_list=gen_engines), load("fix", fix, model=model)


def test_moves_follow_the_plan_from_each_entry_on():
    policy = PlannedPolicy(PLAN)
    decisions, state = policy.decide(ctx(100.0, *pools()), policy.initial_state())
    assert decisions == [] and state.started_at == 100.0     # 3 / 1 already
    decisions, _ = policy.decide(ctx(109.9, *pools()), state)
    assert decisions == []                                    # the second entry is at 10 s
    decisions, _ = policy.decide(ctx(110.0, *pools(busy=2)), state)
    assert [(d.kind, d.source, d.target) for d in decisions] == [
        (DecisionKind.MOVE, "gen", "fix")] * 2
    assert "gen0" not in {d.engine_id for d in decisions}    # the idlest go first
    assert "plan: fix 3 engines, gen 1" in decisions[0].reason


def test_waits_for_moves_in_flight_and_leaves_other_models_and_pools_alone():
    policy = PlannedPolicy(PLAN)
    state = policy.initial_state()._replace(started_at=0.0)
    gen, fix = pools()
    draining = gen._replace(engines=(gen.engines[0]._replace(is_draining=True),)
                            + gen.engines[1:])
    assert policy.decide(ctx(20.0, draining, fix), state)[0] == []
    assert policy.decide(ctx(20.0, *pools(model="other")), state)[0] == []
    extra = load("other", 5)                                  # not in the plan: untouched
    decisions, _ = policy.decide(ctx(20.0, *pools(), extra), state)
    assert {d.source for d in decisions} == {"gen"} and len(decisions) == 2


def test_plan_is_pure():
    policy = PlannedPolicy(PLAN)
    c, state = ctx(50.0, *pools()), policy.initial_state()._replace(started_at=0.0)
    before = copy.deepcopy((c, state))
    assert policy.decide(c, state) == policy.decide(c, state)
    assert (c, state) == before


@pytest.mark.parametrize("raw, why", [
    (None, "plan must be a non-empty list"),
    ([], "plan must be a non-empty list"),
    ("[{", "plan is not valid JSON"),
    ([5], r"plan\[0\] must be a mapping"),
    ([{"at_s": -1, "split": {"a": 1}}], r"plan\[0\].at_s must be a number of seconds >= 0"),
    ([{"at_s": float("nan"), "split": {"a": 1}}], r"plan\[0\].at_s must be a number"),
    ([{"at_s": 5, "split": {"a": 1}}, {"at_s": 5, "split": {"a": 2}}],
     r"plan\[1\].at_s \(5\) must be later than the entry before \(5\)"),
    ([{"at_s": 0, "split": {}}], r"plan\[0\].split must be a non-empty mapping"),
    ([{"at_s": 0, "split": {"a": 0}}], r"plan\[0\].split.a: must be an integer >= 1"),
    ([{"at_s": 0, "split": {"a": 1.5}}], r"plan\[0\].split.a: must be an integer >= 1"),
    ([{"at_s": 0, "split": {"a": 1}, "when": 3}], r"plan\[0\].when: unknown field"),
    ([{"at_s": 0, "split": {1: 2}}], r"plan\[0\].split: pool names must be strings, got 1"),
])
def test_bad_plans_name_the_entry_and_field(raw, why):
    with pytest.raises(ValueError, match=why):
        parse_plan(raw)


def test_plan_as_json_text_and_pools_checked_when_attached():
    policy = PlannedPolicy(json.dumps(PLAN))
    assert policy.target(12.0) == {"gen": 1, "fix": 3} and policy.target(-1.0) is None
    with pytest.raises(ValueError, match=r"plan\[0\].split names pool 'gen'.*\(fix, generate\)"):
        policy.check_pools(["generate", "fix"])
    bad = Allocator(AllocatorConfig("planned", {"plan": [{"at_s": 0, "split": {"nope": 1}}]}))
    with pytest.raises(ValueError, match="names pool 'nope'"):
        malleable_controller(allocator=bad)


def test_controller_follows_the_plan_with_the_move_protocol():
    allocator = Allocator(AllocatorConfig("planned", {"plan": [
        {"at_s": 0, "split": {"gen": 2, "fix": 1}}, {"at_s": 3, "split": {"gen": 1, "fix": 2}}]}))
    controller = malleable_controller(num_gen=2, num_fix=1, allocator=allocator)
    for t in range(8):
        controller.tick(float(t))
    assert sorted(controller.pools["fix"].engine_ids) == ["e0", "e2"]  # idle: lowest id
    assert [r.decision.target for r in allocator.records] == ["fix"]


def test_config_names_the_unknown_pool(tmp_path):
    plan = [{"at_s": 0, "split": {"gen": 1, "fixer": 1}}]
    with pytest.raises(ConfigError, match=r"allocator.options.plan: planned: plan\[0\].split names "
                                          r"pool 'fixer'"):
        parse_config(_data(tmp_path, {"policy": "planned", "options": {"plan": plan}}))
    with pytest.raises(ConfigError, match="allocator.options.plan"):
        parse_config(_data(tmp_path, {"policy": "planned", "options": {"plan": "x"}}))
    ok = parse_config(_data(tmp_path, {"policy": "planned", "options": {"plan": [
        {"at_s": 0, "split": {"gen": 1, "fix": 1}}]}}))
    assert ok.allocator.config.policy == "planned"


def _bench(**kw) -> SimBenchConfig:
    opts = {"policies": ["cortex-malleable"], "rates": [30.0], "num_requests": 600,
            "num_engines": 8, "seed": 1,
            "engine": SimEngineConfig(kv_capacity_tokens=16000, max_num_seqs=8),
            "workload": shifting(NL2SQLWorkloadConfig()),
            "allocator": AllocatorConfig("planned")}
    opts.update(kw)
    return SimBenchConfig(**opts)


def test_bench_plans_the_static_split_of_each_phase_at_its_first_arrival():
    cfg = _bench()
    trace = NL2SQLWorkload(cfg.workload, cfg.seed).trace(30.0, 600)
    plan = planned_split(cfg, load_agent(cfg.retry_budget), trace)
    assert [e["at_s"] for e in plan] == [0.0, round(trace[200].arrival - trace[0].arrival, 3),
                                         round(trace[400].arrival - trace[0].arrival, 3)]
    low, high = plan[0]["split"], plan[1]["split"]
    assert sum(low.values()) == sum(high.values()) == 8
    assert high["fix"] > low["fix"] and plan[2]["split"] == low
    stable = planned_split(_bench(workload=NL2SQLWorkloadConfig()), load_agent(3), trace)
    assert len(stable) == 1                                   # no shift: one split


def test_bench_runs_planned_and_reports_its_moves(capsys, tmp_path):
    _, sim = run_policy(_bench(), "cortex-malleable", 30.0)
    records = sim.controller.allocator.records
    assert {r.decision.target for r in records} == {"generate", "fix"}
    assert all(r.decision.reason.startswith("plan:") for r in records)
    assert len(sim.finished) == 600
    report = run_sim_bench(_bench(num_requests=200))
    assert report["config"]["allocator"]["policy"] == "planned"
    out = tmp_path / "r.json"
    assert main(["bench", "--engine", "sim", "--engines", "4", "--shift", "--requests", "100",
                 "--rate", "10", "--policies", "cortex-malleable", "--allocator", "planned",
                 "--out", str(out)]) == 0
    assert json.loads(out.read_text())["allocation"][0]["policy"] == "planned"
    assert main(["bench", "--engine", "sim", "--allocator", "planned",
                 "--alloc-option", "plan=[]"]) == 2
    assert "--alloc-option plan: planned: plan must be a non-empty list" in capsys.readouterr().err


def test_at_s_counts_from_the_first_step_not_the_first_decision():
    allocator = Allocator(AllocatorConfig("planned", {"plan": [
        {"at_s": 0, "split": {"gen": 2, "fix": 1}}, {"at_s": 3, "split": {"gen": 1, "fix": 2}}]}))
    controller = malleable_controller(num_gen=2, num_fix=1, allocator=allocator)
    for t in range(8):
        controller.tick(float(t))
    assert [r.begun_at for r in allocator.records] == [3.0]   # first step at 0: 0 + 3 s


def test_bench_switches_at_the_phase_first_arrival():
    cfg = _bench()
    trace = NL2SQLWorkload(cfg.workload, cfg.seed).trace(30.0, 600)
    _, sim = run_policy(cfg, "cortex-malleable", 30.0)
    begun = sorted({r.begun_at for r in sim.controller.allocator.records})
    step = cfg.allocator.interval_s
    for first, at in zip((200, 400), begun[-2:], strict=True):   # begun[0]: at_s 0
        assert trace[first].arrival <= at < trace[first].arrival + step


@pytest.mark.parametrize("schedule, splits", [
    ("0:0.1,0.5:0.7,1.0:0.1", [(7, 1), (4, 4)]),   # 1.0 reaches no run: no entry
    ("0.5:0.7", [(5, 3), (4, 4)]),                 # before 0.5: p_first_fail (0.3)
])
def test_bench_plan_covers_exactly_the_phases_runs_see(schedule, splits):
    from dataclasses import replace

    from cortex.workload.nl2sql_sim import parse_fail_schedule
    cfg = _bench(workload=replace(NL2SQLWorkloadConfig(),
                                  fail_schedule=parse_fail_schedule(schedule)))
    trace = NL2SQLWorkload(cfg.workload, cfg.seed).trace(30.0, 600)
    plan = planned_split(cfg, load_agent(cfg.retry_budget), trace)
    assert [(e["split"]["generate"], e["split"]["fix"]) for e in plan] == splits
    assert plan[0]["at_s"] == 0.0 and plan[1]["at_s"] == round(
        trace[300].arrival - trace[0].arrival, 3)


def test_bench_checks_other_options_before_running_when_planning(capsys):
    assert main(["bench", "--engine", "sim", "--policies", "cortex,cortex-malleable",
                 "--allocator", "planned", "--alloc-option", "foo=1"]) == 2
    assert "--alloc-option foo: unknown option" in capsys.readouterr().err


async def test_runtime_follows_a_planned_split_in_real_time(tmp_path):
    """A deployment config with the planned policy: the asyncio runtime's allocator
    moves engines at the planned times while runs keep succeeding."""
    import asyncio

    from cortex.runtime.build import build_runtime

    data = _data(tmp_path, {"policy": "planned", "interval_s": 0.05, "options": {"plan": [
        {"at_s": 0, "split": {"gen": 1, "fix": 2}}, {"at_s": 0.4, "split": {"gen": 2, "fix": 1}}]}},
        engines=[{"backend": "null", "count": 3, "text": "ok", "delay_ms": 5}])
    runtime = await build_runtime(parse_config(data))
    try:
        controller, loop = runtime.controller, asyncio.get_running_loop()
        deadline, runs = loop.time() + 5.0, []
        while loop.time() < deadline:
            runs.append(await runtime.run("w", {"q": str(len(runs))}))
            if [r.decision.target for r in controller.allocator.records][-1:] == ["gen"] \
                    and len(controller.pools["gen"].engine_ids) == 2:
                break
        assert runs and all(r.status.value == "succeeded" for r in runs)
        targets = [r.decision.target for r in controller.allocator.records]
        assert targets[0] == "fix" and targets[-1] == "gen", targets
        assert [len(controller.pools[p].engine_ids) for p in ("gen", "fix")] == [2, 1]
        assert all(r.decision.reason.startswith("plan:") for r in controller.allocator.records)
    finally:
        await runtime.close()

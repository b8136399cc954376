"""cortex-malleable end to end in the simulator: conservation under random moves,
the shifting workload, the bench report and the CLI."""
from __future__ import annotations

import json
import random
import re

import pytest

from cortex.allocator import (
    ALLOCATION_POLICIES,
    AllocatorConfig,
    BaseAllocationPolicy,
    Decision,
    DecisionKind,
)
from cortex.allocator.types import AllocationContext
from cortex.bench.sim_bench import SimBenchConfig, run_policy, run_sim_bench
from cortex.cli import main
from cortex.core import RunStatus
from cortex.engine.sim import SimEngineConfig
from cortex.workload.nl2sql_sim import (
    NL2SQLWorkload,
    NL2SQLWorkloadConfig,
    parse_fail_schedule,
    shifting,
)

SMALL_ENGINE = SimEngineConfig(kv_capacity_tokens=16000, max_num_seqs=8)
VIOLATIONS: list[str] = []


class ChaosPolicy(BaseAllocationPolicy):
    """Test-only: random moves, lends and returns every step (deterministic per step)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def initial_state(self) -> int:
        return 0

    def decide(self, ctx: AllocationContext, state: int) -> tuple[list[Decision], int]:
        for pool in ctx.pools:
            if pool.queue_depth and not pool.num_active:
                VIOLATIONS.append(f"{ctx.now}: {pool.name} has queued work and no engine")
        rng = random.Random(self.seed * 100_003 + state)
        decisions = []
        for _ in range(rng.randint(0, 3)):
            source, target = rng.sample(list(ctx.pools), 2)
            engine = rng.choice(list(source.engines) or [None])
            if engine is None:
                continue
            kind = rng.choice([DecisionKind.MOVE, DecisionKind.LEND, DecisionKind.RETURN])
            if kind is DecisionKind.RETURN:
                target = ctx.pool(engine.home)
            decisions.append(Decision(kind, engine.engine_id, source.name, target.name, "chaos"))
        return decisions, state + 1


if "test-chaos" not in ALLOCATION_POLICIES:
    ALLOCATION_POLICIES.add("test-chaos", ChaosPolicy)


def config(**kw) -> SimBenchConfig:
    opts = {"policies": ["cortex-malleable"], "rates": [30.0], "num_requests": 400,
            "num_engines": 6, "seed": 2, "engine": SMALL_ENGINE,
            "workload": shifting(NL2SQLWorkloadConfig())}
    opts.update(kw)
    return SimBenchConfig(**opts)


def test_random_moves_lose_and_duplicate_nothing():
    VIOLATIONS.clear()
    cfg = config(allocator=AllocatorConfig("test-chaos", {"seed": 7}, interval_s=0.25))
    _, sim = run_policy(cfg, "cortex-malleable", 30.0)
    allocator = sim.controller.allocator
    assert allocator.num_moves() > 20 and VIOLATIONS == []
    assert len(sim.finished) == 400 and all(r.status.is_terminal for r in sim.finished)
    call_ids = [t.call_id for r in sim.finished for t in r.trace]
    assert len(call_ids) == len(set(call_ids))
    stats = [e.stats() for e in sim.engines.values()]
    assert sum(s.num_submitted for s in stats) == sum(
        s.num_finished + s.num_cancelled for s in stats)
    placed = sum(len(allocator.pools[p].engine_ids) for p in allocator.models)
    llm_map = {e: p for e, p in sim.controller.engine_pool.items() if p in allocator.models}
    assert placed == 6 and sorted(llm_map) == sorted(sim.engines)
    for engine_id, pool in llm_map.items():
        assert engine_id in sim.controller.pools[pool].engine_ids


def test_malleable_report_has_moves_cold_accounting_and_timelines():
    report = run_sim_bench(config(policies=["cortex", "cortex-malleable"], rates=[60.0],
                                  num_requests=900, timeline=True, timeline_bin_s=2.0,
                                  allocator=AllocatorConfig(policy_options={"warmup_s": 2.0})))
    rows = {r["policy"]: r for r in report["results"]}
    assert rows["cortex-malleable"]["completed"] > 0
    (alloc,) = report["allocation"]
    assert alloc["decisions"]["move"] > 0 and alloc["moves_per_min"] > 0
    assert set(alloc["engines_at_end"]) == {"generate", "fix"}
    assert sum(alloc["engines_at_end"].values()) == 6
    assert all(0.0 <= c["hit_rate"] <= 1.0 for c in alloc["cold"].values())
    timeline = report["timelines"]["cortex-malleable@60"]["allocator"]
    assert len(timeline["t"]) > 10 and set(timeline["pools"]) == {"generate", "fix"}
    assert "cortex@60" in report["timelines"]                     # static, same monitor
    assert set(report["timelines"]["cortex@60"]["allocator"]["moves"]) == {0}


def test_stable_workload_with_static_policy_is_untouched():
    stable = config(workload=NL2SQLWorkloadConfig(), policies=["cortex"], num_requests=200)
    plain = run_sim_bench(stable)["results"][0]
    watched = run_sim_bench(config(workload=NL2SQLWorkloadConfig(), policies=["cortex"],
                                   num_requests=200, timeline=True))["results"][0]
    drop = ("wall_s",)
    assert {k: v for k, v in plain.items() if k not in drop} == {
        k: v for k, v in watched.items() if k not in drop}


def test_knobs_are_recorded_per_policy():
    report = run_sim_bench(config(policies=["cortex-malleable"], rates=[80.0], knobs=True,
                                  num_requests=600))
    (knobs,) = report["knobs"]
    assert knobs["runs_with_knobs"] > 0 and knobs["turns"]


def test_knobs_cost_quality_in_the_simulated_outcomes():
    """A verify step after a call with knobs fails with the knobs' loss: a planned pass
    stays a pass at loss 0, fails at loss 1, and the draw is the same for every policy."""
    wl = NL2SQLWorkload(NL2SQLWorkloadConfig(), 3)
    runs = wl.trace(10.0, 200)
    passes = [(r.run_id, a + 1) for r in runs for a, label in enumerate(r.attempt_labels)
              if label == "ok"]

    def label(run_id, attempt, loss):
        return wl.tool_result(run_id, "verify", attempt, loss)[1].outcome

    assert all(label(r, a, 0.0) == "ok" for r, a in passes)
    assert all(label(r, a, 1.0) != "ok" for r, a in passes)
    half = [label(r, a, 0.5) for r, a in passes]
    assert 0.35 < half.count("ok") / len(half) < 0.65
    assert half == [label(r, a, 0.5) for r, a in passes]        # deterministic per trace
    failing = [(r.run_id, a + 1) for r in runs for a, lb in enumerate(r.attempt_labels)
               if lb != "ok"]
    assert all(label(r, a, 1.0) == label(r, a, 0.0) for r, a in failing)  # stay as planned


def test_turned_knobs_lose_runs_in_the_simulation():
    """With knobs whose cost is certain failure, the runs that turn a shorter-fix knob
    need more fixes than they would without it: the loss reaches the outcomes."""
    from cortex.allocator.knobs import Knob, KnobKind, KnobSet

    certain = KnobSet((Knob("short-fix", KnobKind.MAX_TOKENS, "fix", 48, 1.0),))
    cfg = config(policies=["cortex"], rates=[80.0], knobs=True, num_requests=600)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("cortex.bench.sim_bench.nl2sql_knobs", lambda: certain)
        _, sim = run_policy(cfg, "cortex", 80.0)
    checked = 0
    for run in (r for r in sim.finished if r.meta.get("knobs_turned")):
        at = run.meta["knobs_turned"][0]["at_s"] + run.arrival
        later = [t for t in run.trace if t.stage == "verify" and t.started_at >= at]
        # the first verify after the turn may check a fix made before it; every later
        # one checks a fix made with the knob, which a cost of 1 always makes wrong
        assert all(t.outcome != "ok" for t in later[1:]), run.run_id
        checked += len(later) > 1
    assert checked > 0


def test_cli_shift_timeline_and_json(tmp_path, capsys):
    out, png = tmp_path / "r.json", tmp_path / "t.png"
    code = main(["bench", "--engine", "sim", "--engines", "4", "--shift", "--max-seqs", "8",
                 "--kv-tokens", "16000", "--policies", "cortex,cortex-malleable",
                 "--rate", "20", "--requests", "300", "--timeline", str(png),
                 "--out", str(out)])
    assert code == 0 and png.stat().st_size > 10_000
    data = json.loads(out.read_text())
    assert data["config"]["workload_config"]["fail_schedule"][1][1] == 0.7
    assert {"allocation", "timelines"} <= set(data)
    assert "wrote" in capsys.readouterr().out


def test_shifting_workload_moves_the_fail_rate():
    wl = shifting(NL2SQLWorkloadConfig())
    assert abs(wl.mean_p_first_fail() - 0.3) < 1e-9
    cfg = config(num_requests=600)
    _, sim = run_policy(cfg, "cortex", 30.0)
    runs = sorted(sim.finished, key=lambda r: int(r.run_id[1:]))
    fixes = [sum(1 for t in r.trace if t.stage == "fix") for r in runs]
    thirds = [sum(fixes[i * 200:(i + 1) * 200]) for i in range(3)]
    assert thirds[1] > 3 * max(thirds[0], thirds[2])
    assert RunStatus.SUCCEEDED in {r.status for r in runs}


def test_fail_schedule_parses_any_shape_and_names_a_bad_entry(capsys):
    assert parse_fail_schedule("0:0.1, 0.25:0.7,0.75:0.1") == [(0.0, 0.1), (0.25, 0.7),
                                                               (0.75, 0.1)]
    wl = NL2SQLWorkloadConfig(fail_schedule=parse_fail_schedule("0:0.1,0.25:0.7,0.75:0.1"))
    assert abs(wl.mean_p_first_fail() - 0.4) < 1e-9  # the static split's rate
    for bad, why in (("0:0.1,0.5", "'0.5': expected FRACTION:RATE"),
                     ("0:1.5", "both in [0, 1]"), ("0.5:0.1,0.2:0.7", "must increase")):
        with pytest.raises(ValueError, match=re.escape(why)):
            parse_fail_schedule(bad)
    with pytest.raises(SystemExit):
        main(["bench", "--engine", "sim", "--fail-schedule", "0:x"])
    assert "--fail-schedule: '0:x'" in capsys.readouterr().err


def test_catalog_seed_keeps_the_databases_while_the_trace_changes():
    def schemas(seed, catalog=None):
        return NL2SQLWorkload(NL2SQLWorkloadConfig(catalog_seed=catalog), seed)._schemas

    assert schemas(1) != schemas(2)  # by default every seed is another catalog too
    assert schemas(1, catalog=7) == schemas(2, catalog=7) == schemas(7)
    traces = [NL2SQLWorkload(NL2SQLWorkloadConfig(catalog_seed=0), s).trace(10.0, 50)
              for s in (1, 2)]
    assert [r.arrival for r in traces[0]] != [r.arrival for r in traces[1]]


def test_alloc_option_and_late_last_reach_the_report(tmp_path, capsys):
    out = tmp_path / "r.json"
    code = main(["bench", "--engine", "sim", "--engines", "4", "--shift", "--max-seqs", "8",
                 "--kv-tokens", "6000", "--requests", "120", "--rate", "8", "--policies",
                 "cortex,cortex-malleable", "--alloc-option", "saturation_moves=true",
                 "--alloc-option", "min_dwell_s=5", "--late-last", "0", "--late-last-when-tipped",
                 "--no-workflow-demand",
                 "--catalog-seed", "3", "--out", str(out)])
    assert code == 0
    config = json.loads(out.read_text())["config"]
    assert config["allocator"]["options"] == {"saturation_moves": True, "min_dwell_s": 5}
    assert config["allocator"]["workflow_demand"] is False
    assert config["late_factor"] == 0.0 and config["late_when_tipped"] is True
    assert config["workload_config"]["catalog_seed"] == 3
    assert main(["bench", "--engine", "sim", "--alloc-option", "hysterisis=0.1"]) == 2
    assert "--alloc-option hysterisis: unknown option" in capsys.readouterr().err
    assert main(["bench", "--engine", "sim", "--late-last-when-tipped"]) == 2
    assert "--late-last-when-tipped needs --late-last K" in capsys.readouterr().err
    with pytest.raises(SystemExit):                         # argparse: exit 2
        main(["bench", "--engine", "sim", "--late-last", "-1"])
    assert "argument --late-last: must be a number >= 0, got '-1'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--engine", "sim", "--alloc-option", "novalue"])

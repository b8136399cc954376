from __future__ import annotations

import json

import pytest

from cortex.bench.metrics import RESULT_KEYS, OracleCache
from cortex.bench.sim_bench import SimBenchConfig, run_sim_bench
from cortex.cli import main
from cortex.engine.sim import SimEngineConfig


def small(policies=("shared-fcfs", "shared-prefix", "cortex"), **kw) -> SimBenchConfig:
    opts = {"policies": list(policies), "rates": [20.0], "num_requests": 150,
            "num_engines": 4, "seed": 3}
    opts.update(kw)
    return SimBenchConfig(**opts)


def strip_wall(report):
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in report["results"]]


def test_same_seed_same_figures():
    a, b = run_sim_bench(small()), run_sim_bench(small())
    assert strip_wall(a) == strip_wall(b)
    c = run_sim_bench(small(seed=4))
    assert strip_wall(a) != strip_wall(c)


def test_result_rows_have_exactly_the_documented_keys():
    report = run_sim_bench(small(policies=["cortex"]))
    (row,) = report["results"]
    assert tuple(row) == RESULT_KEYS
    assert row["completed"] + row["failed"] + row["rejected"] + row["timed_out"] == 150
    assert 0.0 <= row["prefix_hit_rate"] <= 1.0
    assert row["oracle_prefill_tokens_per_run"] <= row["prefill_tokens_per_run"]


def test_isolation_wins_under_memory_pressure():
    engine = SimEngineConfig(kv_capacity_tokens=6000)
    report = run_sim_bench(small(rates=[40.0], num_requests=600, num_engines=8, engine=engine))
    rows = {r["policy"]: r for r in report["results"]}
    assert rows["shared-fcfs"]["slo_attainment"] <= 0.5
    for shared in ("shared-fcfs", "shared-prefix"):
        assert rows["cortex"]["prefix_hit_rate"] > rows[shared]["prefix_hit_rate"]
        assert rows["cortex"]["goodput_rps"] > rows[shared]["goodput_rps"]


def test_hold_for_memory_keeps_calls_out_of_full_engines_and_loses_none():
    # Memory-pressed engines: pushed into the engines, calls wait in each engine's own
    # first-come queue, and the cached prefixes they were routed for are evicted before
    # they run. Held in the pool, they are routed when memory frees.
    engine = SimEngineConfig(kv_capacity_tokens=6000)
    opts = {"policies": ["shared-prefix", "cortex"], "rates": [40.0], "num_requests": 600,
            "num_engines": 8, "engine": engine}
    pushed, held = run_sim_bench(small(**opts)), run_sim_bench(small(hold_for_memory=True,
                                                                     **opts))
    assert (pushed["config"]["hold_for_memory"], held["config"]["hold_for_memory"]) == (
        False, True)
    for a, b in zip(pushed["results"], held["results"], strict=True):
        assert b["completed"] + b["failed"] + b["rejected"] + b["timed_out"] == 600
        assert b["prefill_tokens_per_run"] < a["prefill_tokens_per_run"], a["policy"]
        assert b["goodput_rps"] > a["goodput_rps"], a["policy"]


def test_run_timeout_factor_ends_late_runs_at_that_many_slos():
    engine = SimEngineConfig(kv_capacity_tokens=6000)
    opts = {"policies": ["shared-fcfs"], "rates": [40.0], "num_requests": 600,
            "num_engines": 8, "engine": engine}
    default = run_sim_bench(small(**opts))
    strict = run_sim_bench(small(timeout_factor=1.0, **opts))
    assert default["config"]["timeout_factor"] == 5.0
    assert strict["config"]["timeout_factor"] == 1.0
    slo = strict["config"]["slo_s"]
    (d,), (s,) = default["results"], strict["results"]
    assert s["timed_out"] > d["timed_out"] and s["timed_out"] > 0
    assert s["p99_latency_s"] <= slo + 1e-6 < d["p99_latency_s"]  # nothing finishes later
    for row in (d, s):  # every run is accounted for, once
        assert row["completed"] + row["failed"] + row["rejected"] + row["timed_out"] == 600
    with pytest.raises(ValueError, match="run-timeout-factor must be >= 1"):
        small(timeout_factor=0.5)


def test_oracle_counts_only_first_sight_of_a_prefix():
    oracle = OracleCache(block_size=4)
    oracle.observe(list(range(12)))
    oracle.observe(list(range(8)) + [99, 98, 97, 96])
    assert oracle.prefill_tokens == 12 + 4


def test_cli_smoke_writes_json(tmp_path, capsys):
    out = tmp_path / "results.json"
    code = main(["bench", "--workload", "nl2sql", "--engine", "sim", "--engines", "2",
                 "--policies", "shared-fcfs,cortex", "--rates", "5,10", "--requests", "40",
                 "--seed", "1", "--out", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    assert [(r["policy"], r["rate"]) for r in data["results"]] == [
        ("shared-fcfs", 5.0), ("cortex", 5.0), ("shared-fcfs", 10.0), ("cortex", 10.0)]
    assert "goodput/s" in capsys.readouterr().out


def test_cli_rejects_bad_policy(capsys):
    assert main(["bench", "--engine", "sim", "--policies", "nope", "--requests", "5"]) == 2
    assert "unknown placement policy 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("engine", ["sim", "llamacpp"])
def test_cli_rejects_a_run_timeout_before_the_slo(engine, capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", "--engine", engine, "--run-timeout-factor", "0.5", "--requests", "5"])
    assert info.value.code == 2
    assert "--run-timeout-factor: must be a number >= 1" in capsys.readouterr().err


def test_cli_hold_for_memory_is_a_sim_flag(tmp_path, capsys):
    out = tmp_path / "hold.json"
    assert main(["bench", "--engine", "sim", "--engines", "2", "--requests", "20",
                 "--hold-for-memory", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["config"]["hold_for_memory"] is True
    assert main(["bench", "--engine", "llamacpp", "--hold-for-memory", "--requests", "5"]) == 2
    assert "--hold-for-memory only applies to --engine sim" in capsys.readouterr().err


def test_cli_seeds_runs_each_trace_and_reports_means_and_ratios(tmp_path, capsys):
    out = tmp_path / "seeds.json"
    argv = ["bench", "--engine", "sim", "--engines", "4", "--policies", "shared-fcfs,cortex",
            "--rate", "20", "--requests", "120"]
    assert main(argv + ["--seeds", "3,4", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["config"]["seeds"] == [3, 4] and "seed" not in data["config"]
    singles = []
    for seed in (3, 4):
        assert main(argv + ["--seed", str(seed), "--out", str(tmp_path / f"{seed}.json")]) == 0
        singles.append(json.loads((tmp_path / f"{seed}.json").read_text())["results"])
    per_seed = [[{k: v for k, v in r.items() if k != "wall_s"} for r in rep["results"]]
                for rep in data["per_seed"]]
    assert per_seed == [[{k: v for k, v in r.items() if k != "wall_s"} for r in rows]
                        for rows in singles]                    # each seed as run alone
    for i, row in enumerate(data["results"]):
        assert tuple(row) == RESULT_KEYS
        assert row["goodput_rps"] == (singles[0][i]["goodput_rps"]
                                      + singles[1][i]["goodput_rps"]) / 2
    (block,) = data["seed_summary"]
    fcfs, cortex = block["goodput"]["shared-fcfs"], block["goodput"]["cortex"]
    ratio = block["ratios"]["shared-fcfs"]                      # cortex (last) / the others
    assert list(block["ratios"]) == ["shared-fcfs"]
    assert ratio["per_seed"] == [c / f for c, f in zip(cortex, fcfs)]
    assert ratio["min"] == min(ratio["per_seed"])
    assert ratio["ceiling"] == 20 / (sum(fcfs) / 2)              # goodput <= the rate
    assert ratio["of_means"] <= ratio["ceiling"]
    printed = capsys.readouterr().out
    assert "cortex / shared-fcfs:" in printed
    assert f"(at most {ratio['ceiling']:.2f}x: goodput <= the arrival rate)" in printed


def test_cli_seeds_rejects_bad_lists_and_a_timeline(tmp_path, capsys):
    base = ["bench", "--engine", "sim", "--policies", "cortex", "--requests", "5"]
    for bad in ("1,x", "2,2", ""):
        try:
            main(base + ["--seeds", bad])
        except SystemExit as exc:                               # argparse: exit 2
            assert exc.code == 2
        else:
            raise AssertionError(f"--seeds {bad!r} accepted")
    assert "distinct integers" in capsys.readouterr().err
    assert main(base + ["--seeds", "1,2", "--timeline", str(tmp_path / "t.png")]) == 2
    assert "--timeline draws one trace" in capsys.readouterr().err

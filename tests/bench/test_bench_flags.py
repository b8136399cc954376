"""`cortex bench` numeric flags: argparse refuses anything that is not a finite number
in range (exit 2, the flag named), and a value it accepts is used as given, never
swapped for the default. Parsing only: no bench runs here."""
from __future__ import annotations

import argparse
import asyncio

import pytest

from cortex.bench import real_bench, sim_cli
from cortex.bench.sim_bench import SimBenchConfig, default_slo_s, slo_of
from cortex.cli import build_parser, main
from cortex.workload.nl2sql_sim import NL2SQLWorkload, NL2SQLWorkloadConfig

BENCH = ["bench", "--engine", "sim", "--requests", "5"]


def refused(argv: list[str], capsys) -> str:
    """argparse's exit and message (parse only: a value the parser let through would
    start a bench, and ``--rate nan`` used to hang it)."""
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("flag, value, want", [
    ("--rate", "nan", "must be a finite number, got 'nan'"),
    ("--rate", "inf", "must be a finite number, got 'inf'"),
    ("--rate", "0", "must be a number > 0, got '0'"),
    ("--rate", "-2", "must be a number > 0"),
    ("--rate", "fast", "expected a number, got 'fast'"),
    ("--rates", "5,nan", "expected comma-separated finite numbers > 0, got '5,nan'"),
    ("--rates", "5,inf", "expected comma-separated finite numbers > 0"),
    ("--rates", "5,0", "expected comma-separated finite numbers > 0"),
    ("--rates", ",", "expected comma-separated finite numbers > 0"),  # was: the default rate
    ("--slo", "0", "must be a number > 0, got '0'"),  # was: silently 4x unloaded
    ("--slo", "nan", "must be a finite number"),
    ("--slo", "inf", "must be a finite number"),
    ("--kv-tokens", "0", "must be an integer >= 1, got '0'"),  # was: silently 440000
    ("--kv-tokens", "1.5", "expected an integer, got '1.5'"),
    ("--max-seqs", "0", "must be an integer >= 1, got '0'"),   # was: silently 256
    ("--dbs", "0", "must be an integer >= 1, got '0'"),        # was: silently 8
    ("--engines", "0", "must be an integer >= 1, got '0'"),
    ("--requests", "0", "must be an integer >= 1, got '0'"),
    ("--cache-mb", "-1", "must be a number >= 0, got '-1'"),
    ("--cache-mb", "nan", "must be a finite number"),
    ("--p-fail", "nan", "must be a finite number"),
    ("--p-fail", "1.5", "must be a number in [0, 1], got '1.5'"),
    ("--load-bound", "-1", "must be an integer >= 0, got '-1'"),
    ("--max-queue", "0", "must be an integer >= 1, got '0'"),   # was: every run rejected
    ("--max-queue", "-1", "must be an integer >= 1"),
    ("--late-last", "-1", "must be a number >= 0, got '-1'"),
    ("--late-last", "inf", "must be a finite number"),
    ("--run-timeout-factor", "nan", "must be a finite number"),
    ("--run-timeout-factor", "inf", "must be a finite number"),  # was: accepted
    ("--alloc-interval", "nan", "must be a finite number"),      # was: accepted
    ("--alloc-interval", "0", "must be a number > 0, got '0'"),
    ("--max-engines", "0", "must be an integer >= 1, got '0'"),
])
def test_bad_numbers_are_refused_by_the_parser_naming_the_flag(flag, value, want, capsys):
    err = refused(BENCH + [flag, value], capsys)
    assert f"argument {flag}: {want}" in err


@pytest.mark.parametrize("option", ["min_dwell_s=nan", "min_dwell_s=inf", "hysteresis=1e999"])
def test_alloc_option_refuses_a_non_finite_number(option, capsys):
    err = refused(BENCH + ["--alloc-option", option], capsys)
    assert f"argument --alloc-option: {option.split('=')[0]}: must be a finite number" in err


def test_accepted_values_are_kept_as_given():
    args = build_parser().parse_args(BENCH + [
        "--rates", "0.5, 2", "--slo", "0.25", "--kv-tokens", "16", "--max-seqs", "1",
        "--dbs", "1", "--cache-mb", "0", "--p-fail", "0", "--load-bound", "0",
        "--max-queue", "1", "--late-last", "0", "--run-timeout-factor", "1",
        "--alloc-interval", "0.1", "--max-engines", "4", "--alloc-option", "min_dwell_s=5",
        "--alloc-option", "hysteresis=0.5", "--alloc-option", "saturation_moves=true"])
    assert args.rates == [0.5, 2.0] and args.slo == 0.25
    assert (args.kv_tokens, args.max_seqs, args.dbs) == (16, 1, 1)
    assert (args.cache_mb, args.p_fail, args.load_bound, args.max_queue) == (0.0, 0.0, 0, 1)
    assert (args.late_last, args.run_timeout_factor, args.alloc_interval) == (0.0, 1.0, 0.1)
    assert args.alloc_option == [("min_dwell_s", 5), ("hysteresis", 0.5),
                                 ("saturation_moves", True)]


def test_llamacpp_keeps_a_zero_cache_and_defaults_only_what_is_not_given():
    given = argparse.Namespace(slo=0.5, cache_mb=0.0)
    assert (real_bench.slo_s(given), real_bench.cache_mb(given)) == (0.5, 0.0)
    absent = argparse.Namespace(slo=None, cache_mb=None)
    assert (real_bench.slo_s(absent), real_bench.cache_mb(absent)) == (60.0, 64.0)


@pytest.mark.parametrize("flag, value, field", [("--kv-tokens", 0, "--kv-tokens"),
                                                ("--max-seqs", 0, "max_num_seqs"),
                                                ("--dbs", 0, "num_dbs")])
def test_sim_bench_refuses_a_zero_it_is_handed_instead_of_using_the_default(flag, value,
                                                                           field):
    """Library callers of ``bench_from_args`` skip the parser: a 0 still must not
    become the default (it is refused before any run starts)."""
    args = build_parser().parse_args(BENCH + ["--policies", "cortex"])
    setattr(args, flag.lstrip("-").replace("-", "_"), value)
    args.rates, args.late = [20.0], None
    with pytest.raises(ValueError, match=field):
        sim_cli.bench_from_args(args)


@pytest.mark.parametrize("field, value, want", [
    ("rates", [float("nan")], "rates must be finite numbers > 0"),   # hung the simulator
    ("rates", [20.0, float("inf")], "rates must be finite numbers > 0"),
    ("timeout_factor", float("nan"), "run-timeout-factor must be >= 1"),
    ("timeout_factor", float("inf"), "run-timeout-factor must be >= 1"),
    ("slo_s", 0.0, "--slo must be a finite number > 0"),   # was: silently 4x unloaded
    ("slo_s", float("nan"), "--slo must be a finite number > 0"),
    ("slo_s", -3.0, "--slo must be a finite number > 0"),
    ("max_queue", 0, "--max-queue must be an integer >= 1"),  # was: every run rejected
    ("load_bound", -1, "--load-bound must be an integer >= 0"),
    ("retry_budget", -1, "retry_budget must be an integer >= 0"),
    ("max_engines", 2, r"--max-engines \(2\) must be an integer >= --engines \(4\)"),
    ("engine_startup_s", float("nan"), "engine_startup_s must be a finite number >= 0"),
    ("timeline_bin_s", 0.0, "timeline_bin_s must be a finite number > 0"),
])
def test_sim_bench_config_refuses_bad_numbers(field, value, want):
    opts = {"policies": ["cortex"], "rates": [20.0], "num_engines": 4, field: value}
    with pytest.raises(ValueError, match=want):
        SimBenchConfig(**opts)


def test_sim_bench_keeps_a_given_slo_and_a_budget_equal_to_the_engines():
    cfg = SimBenchConfig(policies=["cortex"], rates=[20.0], slo_s=0.5, max_engines=4)
    assert slo_of(cfg) == 0.5
    assert slo_of(SimBenchConfig(policies=["cortex"], rates=[20.0])) == default_slo_s(cfg)


@pytest.mark.parametrize("rate", [float("nan"), float("inf"), 0.0, -1.0])
def test_traces_refuse_a_rate_that_is_not_finite_and_positive(rate):
    with pytest.raises(ValueError, match="arrival rate must be a finite number > 0"):
        NL2SQLWorkload(NL2SQLWorkloadConfig()).trace(rate, 5)
    with pytest.raises(ValueError, match="arrival rate must be a finite number > 0"):
        real_bench.question_trace(rate, 5, 0)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("field, value, want", [
    ("num_dbs", NAN, "num_dbs must be an integer >= 1"),   # range(nan) deep in a run
    ("num_dbs", 2.0, "num_dbs must be an integer >= 1"),
    ("num_dbs", 0, "num_dbs must be an integer >= 1"),
    ("schema_tokens", INF, "schema_tokens must be an integer >= 1"),
    ("question_tokens", -1, "question_tokens must be an integer >= 0"),
    ("fix_extra_tokens", NAN, "fix_extra_tokens must be an integer >= 0"),
    ("catalog_seed", NAN, "catalog_seed must be an integer"),
    ("schema_spread", NAN, r"schema_spread must be in \[0, 1\)"),
    ("schema_spread", 1.0, r"schema_spread must be in \[0, 1\)"),
    ("p_first_fail", NAN, r"p_first_fail must be in \[0, 1\]"),
    ("p_fix_fail", INF, r"p_fix_fail must be in \[0, 1\]"),
    ("tool_latency_s", {"execute": NAN}, ("tool_latency_s must map stages to a finite "
                                          "number >= 0, got execute: nan")),
    ("tool_latency_s", {"verify": -0.1}, "tool_latency_s must map"),
    ("output_tokens", {"generate": INF, "fix": 70}, ("output_tokens must map stages to an "
                                                    "integer >= 1, got generate: inf")),
    ("system_tokens", {"fix": 1.5}, "system_tokens must map stages to an integer >= 0"),
])
def test_workload_config_refuses_non_finite_and_out_of_range_values(field, value, want):
    with pytest.raises(ValueError, match=want):
        NL2SQLWorkloadConfig(**{field: value})


def test_workload_profile_names_the_file_and_the_bad_value(tmp_path):
    path = tmp_path / "wp.json"
    path.write_text('{"workload_profile": {"tool_latency_s": {"execute": NaN}, "num_runs": 3}}')
    with pytest.raises(ValueError, match=f"{path}: tool_latency_s must map"):
        NL2SQLWorkloadConfig.from_profile(path)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="must be a JSON object"):
        NL2SQLWorkloadConfig.from_profile(path)
    good = NL2SQLWorkloadConfig.from_profile("docs/results/real_workload_profile.json")
    assert good.output_tokens == {"generate": 28, "fix": 30}


def test_llamacpp_bench_passes_the_allocator_flags_to_the_config(monkeypatch):
    """--allocator, --alloc-interval and --max-engines were dropped by the real bench
    (the runtime ran slo-pressure every 1 s with no scale-out whatever was given)."""
    from cortex.config import parse_config

    seen = {}

    def capture(data, source):
        seen["cfg"] = parse_config(data, source)   # the flags make a valid config
        raise LookupError("stop before starting engines")

    monkeypatch.setattr(real_bench, "parse_config", capture)
    args = build_parser().parse_args(["bench", "--engine", "llamacpp", "--engines", "2",
                                      "--allocator", "static", "--alloc-interval", "0.5",
                                      "--max-engines", "3", "--cache-mb", "0"])
    with pytest.raises(LookupError):
        asyncio.run(real_bench.run_policy("cortex-malleable", 1.0, [], args))
    cfg = seen["cfg"]
    assert cfg.allocator.config.policy == "static"
    assert cfg.allocator.config.interval_s == 0.5
    assert cfg.allocator.max_engines == 3
    assert [spec["cache_mb"] for _, spec in cfg.engine_specs] == [0.0, 0.0]


@pytest.mark.parametrize("argv, want", [
    (["--engine", "llamacpp", "--kv-tokens", "6000", "--shift"],
     "--kv-tokens, --shift only apply to --engine sim"),
    (["--engine", "llamacpp", "--knobs"], "--knobs only applies to --engine sim"),
    (["--engine", "sim", "--cache-mb", "8"], "--cache-mb only applies to --engine llamacpp"),
    (["--engine", "sim", "--cache-mb", "0"], "--cache-mb only applies to --engine llamacpp"),
    (["--engine", "llamacpp", "--p-fail", "0"], "--p-fail only applies to --engine sim"),
])
def test_a_flag_the_engine_does_not_read_is_an_error(capsys, argv, want):
    # they were silently ignored: a real-engine bench with --shift measured no shift
    assert main(["bench", *argv, "--requests", "2"]) == 2
    assert want in capsys.readouterr().err


def test_kv_tokens_below_one_block_names_the_flag(capsys):
    assert main(BENCH + ["--kv-tokens", "8"]) == 2
    err = capsys.readouterr().err
    assert "--kv-tokens (8) must hold at least one KV block of 16 tokens" in err
    assert "SimEngineConfig" not in err                 # was: the config field's name

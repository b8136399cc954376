"""Numeric flags of `cortex run`, `eval`, `serve` and `profile`: a finite number in range
or argparse exits 2 naming the flag; a 0 that is accepted means 0 (`cortex bench`'s flags:
tests/bench/test_bench_flags.py). Parsing only."""
from __future__ import annotations

import pytest

from cortex.cli import build_parser, main


def refused(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("argv, flag, want", [
    (["run", "nl2sql", "q"], "--slo", ["0", "must be a number > 0, got '0'"]),
    (["run", "nl2sql", "q"], "--slo", ["nan", "must be a finite number, got 'nan'"]),
    (["run", "nl2sql", "q"], "--slo", ["inf", "must be a finite number"]),
    (["run", "nl2sql", "q"], "--engines", ["0", "must be an integer >= 1, got '0'"]),
    (["run", "nl2sql", "q"], "--cache-mb", ["nan", "must be a finite number"]),
    (["run", "nl2sql", "q"], "--cache-mb", ["-1", "must be a number >= 0"]),
    (["eval", "nl2sql"], "--limit", ["0", "must be an integer >= 1, got '0'"]),  # was: all
    (["eval", "nl2sql"], "--engines", ["0", "must be an integer >= 1"]),
    (["eval", "nl2sql"], "--cache-mb", ["inf", "must be a finite number"]),
    (["eval", "nl2sql"], "--retry-budget", ["-1", "must be an integer >= 0, got '-1'"]),
    (["serve", "--config", "c.yaml"], "--port", ["70000", ("must be an integer in [0, 65535] "
                                                 "(0: any free port), got '70000'")]),
    (["serve", "--config", "c.yaml"], "--port", ["-1", "must be an integer in [0, 65535]"]),
    (["serve", "--config", "c.yaml"], "--grace", ["nan", "must be a finite number"]),
    (["serve", "--config", "c.yaml"], "--grace", ["-5", "must be a number >= 0, got '-5'"]),
])
def test_bad_numbers_are_refused_naming_the_flag(argv, flag, want, capsys):
    value, message = want
    assert f"argument {flag}: {message}" in refused(argv + [flag, value], capsys)


def test_accepted_zeros_are_kept():
    parse = build_parser().parse_args
    assert parse(["run", "nl2sql", "q", "--cache-mb", "0"]).cache_mb == 0.0
    assert parse(["eval", "nl2sql", "--retry-budget", "0"]).retry_budget == 0
    serve = parse(["serve", "--config", "c.yaml", "--port", "0", "--grace", "0"])
    assert (serve.port, serve.grace) == (0, 0.0)


@pytest.mark.parametrize("flag, value, want", [
    ("--repeats", "0", "must be an integer >= 1"),
    ("--prefix-tokens", "64", "must be an integer >= 128"),
    ("--output-tokens", "1", "must be an integer >= 2"),
    ("--block-size", "0", "must be an integer >= 1"),
    ("--cache-mb", "0", "must be a number > 0"),    # no snapshot: nothing to calibrate
    ("--cache-mb", "nan", "must be a finite number"),
])
def test_profile_refuses_bad_numbers_before_measuring(flag, value, want, capsys):
    with pytest.raises(SystemExit) as info:
        main(["profile", "--engine", "llamacpp", flag, value])
    assert info.value.code == 2
    assert f"argument {flag}: {want}" in capsys.readouterr().err


def test_profile_flags_reach_the_profiler(monkeypatch, tmp_path):
    """The documented `cortex profile --engine llamacpp --out profile.json` was refused
    ("unrecognized arguments: --out"): its flags went through an argparse.REMAINDER,
    which takes nothing that starts with '-'."""
    from cortex.engine import profile

    seen = []
    monkeypatch.setattr(profile, "run", lambda args: seen.append(args) or 0)
    out = tmp_path / "profile.json"
    assert main(["profile", "--engine", "llamacpp", "--out", str(out), "--repeats", "1",
                 "--cache-mb", "8"]) == 0
    (args,) = seen
    assert (args.out, args.repeats, args.cache_mb, args.block_size) == (out, 1, 8.0, 16)
    with pytest.raises(SystemExit):          # python -m cortex.engine.profile: same flags
        profile.main(["--repeats", "0"])

"""The ``cortex`` command line. Each subcommand lives in its own module;
this file only parses arguments and dispatches."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from cortex.cli_args import integer, number, numbers


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected distinct integers, got {text!r}")
    return values


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _option(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    value: object = raw.strip()
    if raw.strip().lower() in ("true", "false"):
        return key.strip(), raw.strip().lower() == "true"
    try:
        value = int(raw)
    except ValueError:
        try:
            value = float(raw)
        except ValueError:
            return key.strip(), value
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{key.strip()}: must be a finite number, "
                                             f"got {raw.strip()!r}") from None
    return key.strip(), value


# a run would time out before its SLO below 1; nan and inf are refused too
_timeout_factor = number(1, why=" (a run would time out before its SLO)")


def _fail_schedule(text: str) -> list[tuple[float, float]]:
    from cortex.workload.nl2sql_sim import parse_fail_schedule
    try:
        return parse_fail_schedule(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_bench(sub: argparse._SubParsersAction) -> None:
    import cortex.allocator  # noqa: F401  (registers the cortex-malleable placement)
    from cortex.allocator import ALLOCATION_POLICIES
    from cortex.orchestrator.orchestrator import DEFAULT_TIMEOUT_FACTOR
    from cortex.pool.placement import PLACEMENTS

    p = sub.add_parser("bench", help="replay one workload trace under several policies")
    p.add_argument("--workload", default="nl2sql", choices=["nl2sql"])
    p.add_argument("--engine", default="sim", choices=["sim", "llamacpp"])
    p.add_argument("--engines", type=integer(1), default=4,
                   help="engine budget (same for every policy)")
    p.add_argument("--policies", type=_names, default=PLACEMENTS.names(),
                   help=f"comma-separated: {', '.join(PLACEMENTS.names())}")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--rate", type=number(0, above=True),
                      help="arrival rate, runs/s (Poisson; default 20)")
    rate.add_argument("--rates", type=numbers(0, above=True),
                      help="sweep: comma-separated rates")
    p.add_argument("--requests", type=integer(1), default=500, help="runs per (policy, rate)")
    seed = p.add_mutually_exclusive_group()
    seed.add_argument("--seed", type=int, default=0)
    seed.add_argument("--seeds", type=_ints, help="comma-separated seeds: the whole "
                      "comparison once per seed (trace); prints and writes the means and "
                      "the last policy's goodput ratio to each other, per seed")
    p.add_argument("--slo", type=number(0, above=True), help="per-run SLO in seconds "
                   "(default: sim 4x unloaded, llamacpp 60)")
    p.add_argument("--kv-tokens", type=integer(1), help="sim: KV capacity per engine, tokens")
    p.add_argument("--cache-mb", type=number(0), help="llamacpp: prefix-cache budget per "
                   "engine, MB (default 64; 0: only the live context is reused)")
    p.add_argument("--dbs", type=integer(1), help="nl2sql: number of databases (sim)")
    p.add_argument("--p-fail", type=number(0, 1), help="sim: first-attempt failure probability")
    p.add_argument("--engine-profile", type=Path, help="sim: engine calibration JSON")
    p.add_argument("--workload-profile", type=Path, help="sim: workload profile JSON")
    p.add_argument("--profile-out", type=Path, help="llamacpp: write measured workload profile")
    p.add_argument("--load-bound", type=integer(0), default=2, help="prefix-affinity load bound")
    p.add_argument("--max-queue", type=integer(1), default=4096, help="bounded queue per pool")
    p.add_argument("--max-seqs", type=integer(1),
                   help="sim: max sequences per engine (max_num_seqs)")
    p.add_argument("--shift", action="store_true", help="nl2sql sim: shifting workload, "
                   "first-attempt failure rate 10%% -> 70%% -> 10%% over the trace")
    p.add_argument("--fail-schedule", type=_fail_schedule, metavar="F:P,...",
                   help="nl2sql sim: first-attempt failure rate P from fraction F of the "
                   "trace on, e.g. 0:0.1,0.25:0.7,0.75:0.1 (--shift is 0:0.1,0.333:0.7,0.667:0.1)")
    p.add_argument("--catalog-seed", type=int, metavar="N", help="nl2sql sim: draw the "
                   "databases (schema sizes) from N instead of each trace's seed, so seeds "
                   "vary only arrivals and outcomes")
    p.add_argument("--knobs", action="store_true", help="sim: runs with negative slack turn "
                   "the agent's knobs (shorter outputs, fewer fixes), every policy")
    p.add_argument("--late-last", type=number(0), metavar="K", help="slack-ordered pools "
                   "serve calls later than -K x their expected service after every call "
                   "that can still meet its SLO (default: strict least-slack order)")
    p.add_argument("--late-last-when-tipped", action="store_true", help="with --late-last: "
                   "only while a pool's queue is mostly late calls (docs/architecture.md)")
    p.add_argument("--hold-for-memory", action=argparse.BooleanOptionalAction, default=False,
                   help="sim: a call waits in its pool until an engine's KV memory can "
                   "take it, instead of in the engine's first-come queue "
                   "(docs/architecture.md)")
    p.add_argument("--run-timeout-factor", type=_timeout_factor, metavar="F",
                   default=DEFAULT_TIMEOUT_FACTOR, help="a run times out (its calls are "
                   "cancelled) once F x its SLO has passed (default %(default)g)")
    p.add_argument("--allocator", default="slo-pressure", choices=ALLOCATION_POLICIES.names(),
                   help="cortex-malleable: allocation policy")
    p.add_argument("--alloc-option", type=_option, action="append", default=[],
                   metavar="KEY=VALUE", help="cortex-malleable: an option of the allocation "
                   "policy (slo-pressure: PressureConfig fields), repeatable")
    p.add_argument("--alloc-interval", type=number(0, above=True), default=1.0,
                   help="cortex-malleable: seconds between allocator steps")
    p.add_argument("--workflow-demand", action=argparse.BooleanOptionalAction, default=True,
                   help="cortex-malleable: a stage's offered load is at least its runs' "
                   "first visits x its visits per run (default; docs/allocator.md)")
    p.add_argument("--max-engines", type=integer(1), help="cortex-malleable: engine budget "
                   "for scale-out (>= --engines; default: no scale-out)")
    p.add_argument("--timeline", type=Path, help="sim: write a timeline PNG (engines per "
                   "pool, calls per pool, SLO attainment over time); JSON goes in --out")
    p.add_argument("--out", type=Path, help="write results JSON here")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    from cortex.bench.table import render_table

    if args.rates is None:
        args.rates = [20.0 if args.rate is None else args.rate]
    args.late = _late_order(args)
    _check_engine_flags(args)
    if args.engine == "sim":
        from cortex.bench.sim_cli import bench_from_args
    else:
        from cortex.bench.real_bench import bench_from_args
    if args.seeds:
        report = _bench_seeds(args, bench_from_args)
    else:
        report = bench_from_args(args)
        print(render_table(report["results"]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")
    return 0


# flags one engine's bench reads and the other's would silently ignore
ENGINE_ONLY_FLAGS = {
    "sim": ("kv_tokens", "max_seqs", "dbs", "p_fail", "engine_profile", "workload_profile",
            "shift", "fail_schedule", "catalog_seed", "knobs", "timeline", "hold_for_memory"),
    "llamacpp": ("cache_mb", "profile_out"),
}


def _check_engine_flags(args: argparse.Namespace) -> None:
    """Refuse flags the chosen ``--engine`` does not read (they were silently ignored).

    Raises:
        ValueError: names the flags and the engine they belong to.
    """
    for engine, names in ENGINE_ONLY_FLAGS.items():
        given = [f"--{n.replace('_', '-')}" for n in names  # 0 is a given value
                 if getattr(args, n, None) is not None and getattr(args, n) is not False]
        if engine != args.engine and given:
            raise ValueError(f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} "
                             f"to --engine {engine} (this bench runs --engine {args.engine})")


def _late_order(args: argparse.Namespace) -> Any:
    """``--late-last K [--late-last-when-tipped]`` as a ``LateOrder`` (None: strict order;
    argparse has checked K).

    Raises:
        ValueError: ``--late-last-when-tipped`` without ``--late-last``.
    """
    from cortex.pool.pool import LateOrder

    if args.late_last is None:
        if args.late_last_when_tipped:
            raise ValueError("--late-last-when-tipped needs --late-last K")
        return None
    return LateOrder(args.late_last, args.late_last_when_tipped)


def _bench_seeds(args: argparse.Namespace, bench_from_args: Any) -> dict[str, Any]:
    from cortex.bench.seeds import combine_seeds, render_seed_summary
    from cortex.bench.table import render_table

    if getattr(args, "timeline", None):
        raise ValueError("--timeline draws one trace: use it with --seed, not --seeds")
    reports = []
    for seed in args.seeds:
        args.seed = seed
        reports.append(bench_from_args(args))
        print(f"seed {seed}")
        print(render_table(reports[-1]["results"]))
    report = combine_seeds(args.seeds, reports)
    print(f"mean over seeds {', '.join(map(str, args.seeds))}")
    print(render_table(report["results"]))
    print(render_seed_summary(report))
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cortex", description="Cortex: serve agentic LLM workflows on stage-isolated "
        "engine pools (README.md, docs/).")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_bench(sub)
    for module in ("cortex.cli_run", "cortex.cli_eval", "cortex.cli_serve",
                   "cortex.cli_report", "cortex.cli_profile"):
        try:
            __import__(module, fromlist=["add_parser"]).add_parser(sub)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"cortex {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Build a ``SimBenchConfig`` from `cortex bench` arguments and run it."""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from cortex.allocator import AllocatorConfig, is_malleable
from cortex.allocator.policy import PolicyOptionError, build_policy
from cortex.allocator.timeline import plot_timeline
from cortex.bench.sim_bench import SimBenchConfig, run_sim_bench
from cortex.engine.sim import SimEngineConfig
from cortex.orchestrator.orchestrator import DEFAULT_TIMEOUT_FACTOR
from cortex.workload.nl2sql_sim import NL2SQLWorkload, NL2SQLWorkloadConfig, shifting


def bench_from_args(args: argparse.Namespace) -> dict[str, Any]:
    engine = (SimEngineConfig.from_profile(args.engine_profile) if args.engine_profile
              else SimEngineConfig())
    if args.kv_tokens is not None:
        if args.kv_tokens < engine.block_size:   # else the message names the config field
            raise ValueError(f"--kv-tokens ({args.kv_tokens}) must hold at least one KV "
                             f"block of {engine.block_size} tokens")
        engine = replace(engine, kv_capacity_tokens=args.kv_tokens)
    if getattr(args, "max_seqs", None) is not None:
        engine = replace(engine, max_num_seqs=args.max_seqs)
    workload = (NL2SQLWorkloadConfig.from_profile(args.workload_profile)
                if args.workload_profile else NL2SQLWorkloadConfig())
    if args.dbs is not None:
        workload = replace(workload, num_dbs=args.dbs)
    if getattr(args, "catalog_seed", None) is not None:
        workload = replace(workload, catalog_seed=args.catalog_seed)
    if args.p_fail is not None:
        workload = replace(workload, p_first_fail=args.p_fail)
    if getattr(args, "shift", False):
        workload = shifting(workload)
    if getattr(args, "fail_schedule", None) is not None:
        workload = replace(workload, fail_schedule=args.fail_schedule)
    timeline = getattr(args, "timeline", None)
    cfg = SimBenchConfig(policies=args.policies, rates=args.rates, num_requests=args.requests,
                         seed=args.seed, num_engines=args.engines, engine=engine,
                         workload=workload, slo_s=args.slo, max_queue=args.max_queue,
                         load_bound=args.load_bound,
                         allocator=allocator_config(args),
                         max_engines=getattr(args, "max_engines", None),
                         timeline=timeline is not None, knobs=getattr(args, "knobs", False),
                         late=getattr(args, "late", None),
                         hold_for_memory=getattr(args, "hold_for_memory", False),
                         timeout_factor=getattr(args, "run_timeout_factor",
                                                DEFAULT_TIMEOUT_FACTOR))
    report = run_sim_bench(cfg)
    if timeline is not None:
        path = write_timeline(report, cfg, timeline)
        if path is not None:
            print(f"wrote {path}")
    return report


def allocator_config(args: argparse.Namespace) -> AllocatorConfig:
    """``--allocator``, ``--alloc-interval`` and ``--alloc-option`` as a config.

    Raises:
        ValueError: an option the policy does not have, or a bad value.
    """
    policy = getattr(args, "allocator", "slo-pressure")
    options = dict(getattr(args, "alloc_option", None) or [])
    try:
        check = options
        if policy == "planned" and "plan" not in options:  # the bench plans from the trace
            check = options | {"plan": [{"at_s": 0, "split": {"generate": 1}}]}
        build_policy(policy, check)
    except PolicyOptionError as exc:
        where = f"--alloc-option {exc.option}: " if exc.option else "--alloc-option: "
        raise ValueError(where + str(exc)) from None
    demand = getattr(args, "workflow_demand", None)   # None: AllocatorConfig's default
    flags = {} if demand is None else {"workflow_demand": demand}
    return AllocatorConfig(policy, interval_s=getattr(args, "alloc_interval", 1.0),
                           policy_options=options, **flags)


def write_timeline(report: dict[str, Any], cfg: SimBenchConfig, path: Path) -> Path | None:
    """Plot the first malleable run's timeline with every policy's SLO attainment at
    the same rate; workload shifts are marked. None when no malleable policy ran."""
    timelines = report.get("timelines", {})
    key = next((k for k in timelines if is_malleable(k.split("@")[0])), None)
    if key is None:
        return None
    rate = key.split("@")[1]
    slo = {k.split("@")[0]: v["slo"] for k, v in timelines.items() if k.split("@")[1] == rate}
    phases: list[tuple[float, str]] = []
    if cfg.workload.fail_schedule:
        trace = NL2SQLWorkload(cfg.workload, cfg.seed).trace(float(rate), cfg.num_requests)
        phases = [(trace[int(at * (len(trace) - 1))].arrival, f"p_fail {p:g}")
                  for at, p in cfg.workload.fail_schedule if at > 0]
    title = (f"{cfg.num_engines} engines, {rate} runs/s"
             + (", shifting workload" if cfg.workload.fail_schedule else ""))
    return plot_timeline(path, timelines[key]["allocator"], slo, title, phases)

"""Build a ``SimBenchConfig`` from `cortex bench` arguments and run it."""
from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from cortex.bench.sim_bench import SimBenchConfig, run_sim_bench
from cortex.engine.sim import SimEngineConfig
from cortex.workload.nl2sql_sim import NL2SQLWorkloadConfig


def bench_from_args(args: argparse.Namespace) -> dict[str, Any]:
    engine = (SimEngineConfig.from_profile(args.engine_profile) if args.engine_profile
              else SimEngineConfig())
    if args.kv_tokens:
        engine = replace(engine, kv_capacity_tokens=args.kv_tokens)
    workload = (NL2SQLWorkloadConfig.from_profile(args.workload_profile)
                if args.workload_profile else NL2SQLWorkloadConfig())
    if args.dbs:
        workload = replace(workload, num_dbs=args.dbs)
    if args.p_fail is not None:
        workload = replace(workload, p_first_fail=args.p_fail)
    cfg = SimBenchConfig(policies=args.policies, rates=args.rates, num_requests=args.requests,
                         seed=args.seed, num_engines=args.engines, engine=engine,
                         workload=workload, slo_s=args.slo, max_queue=args.max_queue,
                         load_bound=args.load_bound)
    return run_sim_bench(cfg)

"""`cortex bench --engine llamacpp`: the same NL2SQL question trace, as Poisson
arrivals, on real llama.cpp engines under each policy (fresh engines and
caches per policy, so no policy inherits another's warm cache)."""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cortex.allocator import is_malleable
from cortex.allocator.report import allocation_summary
from cortex.bench.metrics import OracleCache, summarize
from cortex.checks import is_number
from cortex.config import parse_config
from cortex.orchestrator.orchestrator import DEFAULT_TIMEOUT_FACTOR
from cortex.orchestrator.run import Run
from cortex.runtime.build import build_runtime

DEFAULT_SLO_S = 60.0
DEFAULT_CACHE_MB = 64.0


def slo_s(args: argparse.Namespace) -> float:
    """``--slo``, 60 s when not given (a given value, validated by the parser, is kept)."""
    return DEFAULT_SLO_S if args.slo is None else args.slo


def cache_mb(args: argparse.Namespace) -> float:
    """``--cache-mb``, 64 MB when not given; 0 is kept (only the live context is reused)."""
    return DEFAULT_CACHE_MB if args.cache_mb is None else args.cache_mb


@dataclass(slots=True)
class Arrival:
    at: float
    question: str
    db: str


def question_trace(rate: float, num_runs: int, seed: int) -> list[Arrival]:
    """Questions drawn (seeded) from the built-in set, with Poisson arrival times.

    Raises:
        ValueError: ``rate`` is not a finite number > 0.
    """
    if not (is_number(rate) and rate > 0):
        raise ValueError(f"arrival rate must be a finite number > 0, got {rate!r}")
    from cortex.nl2sql.datasets import load_questions

    questions = load_questions()
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(num_runs):
        t += rng.expovariate(rate)
        q = rng.choice(questions)
        out.append(Arrival(t, q.question, q.db_id))
    return out


async def run_policy(policy: str, rate: float, trace: list[Arrival], args: argparse.Namespace
                     ) -> tuple[dict[str, Any], list[Run], dict[str, Any] | None]:
    """One (policy, rate) point on fresh engines: the result row, the runs, and
    the allocator's summary (decisions, cold starts) for malleable policies."""
    data: dict[str, Any] = {
        "policy": policy, "workflows": ["nl2sql"], "max_queue": args.max_queue,
        "load_bound": args.load_bound, "late_last": getattr(args, "late_last", None),
        "late_last_when_tipped": getattr(args, "late_last_when_tipped", False),
        "run_timeout_factor": getattr(args, "run_timeout_factor", DEFAULT_TIMEOUT_FACTOR),
        "engines": [{"backend": "llamacpp", "count": args.engines,
                     "cache_mb": cache_mb(args)}],
    }
    options = dict(getattr(args, "alloc_option", None) or [])
    if is_malleable(policy):
        data["allocator"] = {"policy": getattr(args, "allocator", "slo-pressure"),
                             "interval_s": getattr(args, "alloc_interval", 1.0),
                             "options": options}
        if getattr(args, "max_engines", None) is not None:        # None: no scale-out
            data["allocator"]["max_engines"] = args.max_engines
        if getattr(args, "workflow_demand", None) is not None:   # None: the config default
            data["allocator"]["workflow_demand"] = args.workflow_demand
    cfg = parse_config(data, source="<cortex bench flags>")
    oracle = OracleCache(block_size=1)
    runtime = await build_runtime(cfg, observe=lambda req: oracle.observe(req.prompt_tokens))
    slo = slo_s(args)
    started = time.perf_counter()
    try:
        t0 = runtime.clock()
        ids = []
        for arrival in trace:
            await asyncio.sleep(max(0.0, t0 + arrival.at - runtime.clock()))
            run = runtime.submit("nl2sql", {"question": arrival.question, "db": arrival.db},
                                 slo_s=slo)
            ids.append(run.run_id)
        runs = [await runtime.wait(i) for i in ids]
        allocator = runtime.controller.allocator
        allocation = (allocation_summary(allocator, runs)
                      if allocator is not None and is_malleable(policy) else None)
    finally:
        await runtime.close()
    wall = time.perf_counter() - started
    llm = {s for wf in cfg.workflows for s in wf.llm_stages}
    row = summarize(policy, rate, runs, llm, oracle.prefill_tokens, wall)
    return row, runs, allocation


def workload_profile(runs: list[Run]) -> dict[str, Any]:
    """Measured shape of the real agent, in ``NL2SQLWorkloadConfig`` keys (sim input)."""
    prompt: dict[str, list[int]] = {}
    output: dict[str, list[int]] = {}
    tools: dict[str, list[float]] = {}
    first, first_bad, fixes, fixes_bad = 0, 0, 0, 0
    for run in runs:
        for entry in run.trace:
            if not entry.ran:  # stopped or refused before it finished: no measurement
                continue
            if entry.usage.prompt_tokens:
                prompt.setdefault(entry.stage, []).append(entry.usage.prompt_tokens)
                output.setdefault(entry.stage, []).append(entry.usage.output_tokens)
            else:
                tools.setdefault(entry.stage, []).append(entry.usage.service_s)
            if entry.stage == "verify":
                bad = entry.outcome != "ok"
                if entry.attempt == 1:
                    first, first_bad = first + 1, first_bad + bad
                else:
                    fixes, fixes_bad = fixes + 1, fixes_bad + bad
    mean = lambda xs: sum(xs) / len(xs) if xs else 0.0
    return {
        "prompt_tokens": {s: round(mean(v), 1) for s, v in prompt.items()},
        "output_tokens": {s: max(1, round(mean(v))) for s, v in output.items()},
        "p_first_fail": round(first_bad / first, 4) if first else 0.0,
        "p_fix_fail": round(fixes_bad / fixes, 4) if fixes else 0.0,
        "tool_latency_s": {s: round(mean(v), 5) for s, v in tools.items()},
        "num_runs": len(runs),
    }


def bench_from_args(args: argparse.Namespace) -> dict[str, Any]:
    results, all_runs, allocation = [], [], []
    for rate in args.rates:
        trace = question_trace(rate, args.requests, args.seed)
        for policy in args.policies:
            row, runs, alloc = asyncio.run(run_policy(policy, rate, trace, args))
            print(json.dumps(row))
            results.append(row)
            all_runs.extend(runs)
            if alloc is not None:
                allocation.append({"policy": policy, "rate": rate} | alloc)
                print(json.dumps({"policy": policy, "rate": rate,
                                  "decisions": alloc["decisions"], "cold": alloc["cold"]}))
    profile = workload_profile(all_runs)
    if args.profile_out:
        Path(args.profile_out).write_text(json.dumps({"workload_profile": profile}, indent=2))
    config = {"workload": "nl2sql", "engine": "llamacpp", "engines": args.engines,
              "policies": args.policies, "rates": args.rates, "requests": args.requests,
              "seed": args.seed, "slo_s": slo_s(args), "cache_mb": cache_mb(args),
              "load_bound": args.load_bound, "max_queue": args.max_queue,
              "late_factor": getattr(args, "late_last", None),
              "late_when_tipped": getattr(args, "late_last_when_tipped", False),
              "timeout_factor": getattr(args, "run_timeout_factor", DEFAULT_TIMEOUT_FACTOR),
              "allocator": getattr(args, "allocator", "slo-pressure"),
              "alloc_interval_s": getattr(args, "alloc_interval", 1.0),
              "max_engines": getattr(args, "max_engines", None),
              "allocator_options": dict(getattr(args, "alloc_option", None) or [])}
    report = {"config": config, "results": results, "workload_profile": profile}
    if allocation:
        report["allocation"] = allocation
    return report

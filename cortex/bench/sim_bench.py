"""`cortex bench --engine sim`: replay one NL2SQL trace under each policy on simulated engines."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from cortex.bench.metrics import OracleCache, summarize
from cortex.controller import Controller
from cortex.engine.sim import SimEngine, SimEngineConfig
from cortex.nl2sql.workflow import load_agent
from cortex.orchestrator.estimates import StageEstimator
from cortex.orchestrator.orchestrator import Orchestrator
from cortex.pool.placement import build_layout, expected_stage_work
from cortex.runtime.simulator import Simulator, sim_preparer
from cortex.workload.nl2sql_sim import NL2SQLWorkload, NL2SQLWorkloadConfig


@dataclass(slots=True)
class SimBenchConfig:
    policies: list[str]
    rates: list[float]
    num_requests: int = 500
    seed: int = 0
    num_engines: int = 4
    engine: SimEngineConfig = field(default_factory=SimEngineConfig)
    workload: NL2SQLWorkloadConfig = field(default_factory=NL2SQLWorkloadConfig)
    slo_s: float | None = None
    max_queue: int = 4096
    load_bound: int = 2
    retry_budget: int = 3

    def __post_init__(self) -> None:
        if not self.policies or not self.rates:
            raise ValueError("need at least one policy and one rate")
        if any(r <= 0 for r in self.rates):
            raise ValueError("rates must be positive")
        if self.num_requests < 1 or self.num_engines < 1:
            raise ValueError("--requests and --engines must be >= 1")


def _service_priors(cfg: SimBenchConfig, workload: NL2SQLWorkload) -> dict[str, float]:
    eng = cfg.engine
    return workload.expected_service_s(eng.prefill_s_per_token,
                                       eng.decode_base_s + eng.decode_per_seq_s)


def default_slo_s(cfg: SimBenchConfig) -> float:
    """4x the unloaded latency of a run whose first attempt succeeds (cold caches)."""
    priors = _service_priors(cfg, NL2SQLWorkload(cfg.workload, cfg.seed))
    one_pass = sum(priors.get(s, 0.0) for s in ("schema", "generate", "execute", "verify"))
    return round(4 * one_pass, 3)


def run_policy(cfg: SimBenchConfig, policy: str, rate: float) -> tuple[dict[str, Any], Simulator]:
    workflow = load_agent(cfg.retry_budget)
    workload = NL2SQLWorkload(cfg.workload, cfg.seed)
    trace = workload.trace(rate, cfg.num_requests)
    priors = _service_priors(cfg, workload)
    estimator = StageEstimator()
    for stage, seconds in priors.items():
        if stage in workflow.stages:
            estimator.seed(workflow, stage, seconds)
    work = expected_stage_work(workflow, priors, workload.expected_outcomes(), seed=cfg.seed)
    layout = build_layout(policy, workflow, cfg.num_engines, work)
    engines = {f"e{i}": SimEngine(f"e{i}", cfg.engine) for i in range(cfg.num_engines)}
    ids = iter(engines)
    views = {p.name: [engines[next(ids)] for _ in range(p.num_engines)]
             for p in layout.pools if set(p.stages) & set(workflow.llm_stages)}
    orchestrator = Orchestrator({workflow.name: workflow}, estimator)
    controller = Controller(orchestrator, layout, views, sim_preparer(workload),
                            max_queue=cfg.max_queue, load_bound=cfg.load_bound)
    oracle = OracleCache(cfg.engine.block_size)
    sim = Simulator(controller, engines, workload, workflow.name,
                    on_llm_submit=lambda req: oracle.observe(req.prompt_tokens))
    started = time.perf_counter()
    runs = sim.run(trace, cfg.slo_s or default_slo_s(cfg))
    wall = time.perf_counter() - started
    row = summarize(policy, rate, runs, set(workflow.llm_stages), oracle.prefill_tokens, wall)
    return row, sim


def run_sim_bench(cfg: SimBenchConfig) -> dict[str, Any]:
    results = []
    for rate in cfg.rates:
        for policy in cfg.policies:
            row, _ = run_policy(cfg, policy, rate)
            results.append(row)
    config = {
        "workload": "nl2sql", "engine": "sim", "engines": cfg.num_engines,
        "policies": cfg.policies, "rates": cfg.rates, "requests": cfg.num_requests,
        "seed": cfg.seed, "slo_s": cfg.slo_s or default_slo_s(cfg),
        "max_queue": cfg.max_queue, "load_bound": cfg.load_bound,
        "retry_budget": cfg.retry_budget, "engine_config": cfg.engine.to_dict(),
        "workload_config": cfg.workload.to_dict(),
    }
    return {"config": config, "results": results}

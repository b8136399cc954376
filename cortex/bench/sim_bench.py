"""`cortex bench --engine sim`: replay one NL2SQL trace under each policy on simulated engines."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from cortex.allocator import Allocator, AllocatorConfig, is_malleable
from cortex.allocator.knobs import nl2sql_knobs, turned
from cortex.allocator.report import allocation_summary
from cortex.allocator.scaling import SimEngineProvider
from cortex.allocator.timeline import slo_series
from cortex.bench.metrics import OracleCache, summarize
from cortex.checks import is_int, is_number
from cortex.controller import Controller
from cortex.engine.sim import SimEngine, SimEngineConfig
from cortex.nl2sql.workflow import load_agent
from cortex.orchestrator.estimates import StageEstimator
from cortex.orchestrator.orchestrator import DEFAULT_TIMEOUT_FACTOR, Orchestrator
from cortex.orchestrator.run import Run
from cortex.pool.placement import build_layout, expected_stage_work, split_engines
from cortex.pool.pool import LateOrder
from cortex.runtime.simulator import Simulator, sim_preparer
from cortex.workflow.graph import CompiledWorkflow
from cortex.workload.nl2sql_sim import NL2SQLWorkload, NL2SQLWorkloadConfig, PlannedRun


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
    # cortex-malleable: allocator settings; engine budget for scale-out (None: fixed set)
    allocator: AllocatorConfig = field(default_factory=AllocatorConfig)
    max_engines: int | None = None
    engine_startup_s: float = 5.0
    timeline: bool = False          # record engines/queues/SLO over time for every policy
    timeline_bin_s: float = 5.0
    knobs: bool = False             # turn the agent's knobs for runs with negative slack
    late: LateOrder | None = None   # slack pools serve hopeless calls last (StagePool)
    hold_for_memory: bool = False   # calls wait in the pool until an engine's KV can take them
    timeout_factor: float = DEFAULT_TIMEOUT_FACTOR  # runs time out after this x their SLO

    def __post_init__(self) -> None:
        """Raises ValueError naming the ``cortex bench`` flag (nan and inf are refused:
        a nan rate used to hang the simulator)."""
        if not self.policies or not self.rates:
            raise ValueError("need at least one policy and one rate")
        if not all(is_number(r) and r > 0 for r in self.rates):
            raise ValueError(f"rates must be finite numbers > 0, got {self.rates}")
        if not (is_number(self.timeout_factor) and self.timeout_factor >= 1):
            raise ValueError("--run-timeout-factor must be >= 1 (a run would time out "
                             f"before its SLO) and finite, got {self.timeout_factor!r}")
        if self.slo_s is not None and not (is_number(self.slo_s) and self.slo_s > 0):
            raise ValueError(f"--slo must be a finite number > 0, got {self.slo_s!r}")
        if not (is_int(self.num_requests, 1) and is_int(self.num_engines, 1)):
            raise ValueError("--requests and --engines must be >= 1")
        for flag, value, low in (("--max-queue", self.max_queue, 1),
                                 ("--load-bound", self.load_bound, 0),
                                 ("retry_budget", self.retry_budget, 0)):
            if not is_int(value, low):
                raise ValueError(f"{flag} must be an integer >= {low}, got {value!r}")
        if self.max_engines is not None and not is_int(self.max_engines, self.num_engines):
            raise ValueError(f"--max-engines ({self.max_engines!r}) must be an integer >= "
                             f"--engines ({self.num_engines})")
        if not (is_number(self.engine_startup_s) and self.engine_startup_s >= 0):
            raise ValueError(f"engine_startup_s must be a finite number >= 0, "
                             f"got {self.engine_startup_s!r}")
        if not (is_number(self.timeline_bin_s) and self.timeline_bin_s > 0):
            raise ValueError(f"timeline_bin_s must be a finite number > 0, "
                             f"got {self.timeline_bin_s!r}")


def slo_of(cfg: SimBenchConfig) -> float:
    """The configured SLO, or ``default_slo_s`` when none is set (a set one is kept)."""
    return cfg.slo_s if cfg.slo_s is not None else default_slo_s(cfg)


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
    knobs = {workflow.name: nl2sql_knobs()} if cfg.knobs else None
    orchestrator = Orchestrator({workflow.name: workflow}, estimator, knobs=knobs,
                                timeout_factor=cfg.timeout_factor)
    controller = Controller(orchestrator, layout, views, sim_preparer(workload),
                            max_queue=cfg.max_queue, load_bound=cfg.load_bound,
                            allocator=_allocator(cfg, policy, engines,
                                                 lambda: planned_split(cfg, workflow, trace)),
                            late=cfg.late,
                            hold_for_memory=cfg.hold_for_memory)
    oracle = OracleCache(cfg.engine.block_size)
    sim = Simulator(controller, engines, workload, workflow.name,
                    on_llm_submit=lambda req: oracle.observe(req.prompt_tokens))
    started = time.perf_counter()
    runs = sim.run(trace, slo_of(cfg))
    wall = time.perf_counter() - started
    row = summarize(policy, rate, runs, set(workflow.llm_stages), oracle.prefill_tokens, wall)
    return row, sim


def _allocator(cfg: SimBenchConfig, policy: str, engines: dict[str, SimEngine],
               plan: Callable[[], list[dict[str, Any]]]) -> Allocator | None:
    """cortex-malleable gets the configured allocator (with a provider when the
    budget allows scale-out; ``planned`` without a plan follows ``plan()``); other
    policies get a never-moving one only to record a timeline."""
    if is_malleable(policy):
        provider = None
        if cfg.max_engines is not None and cfg.max_engines > cfg.num_engines:
            provider = SimEngineProvider(engines, cfg.engine, cfg.max_engines,
                                         cfg.engine_startup_s)
        alloc = cfg.allocator
        if alloc.policy == "planned" and "plan" not in alloc.policy_options:
            alloc = replace(alloc, policy_options=alloc.policy_options | {"plan": plan()})
        return Allocator(alloc, provider)
    if cfg.timeline:
        return Allocator(AllocatorConfig("static", interval_s=cfg.allocator.interval_s))
    return None


def planned_split(cfg: SimBenchConfig, workflow: CompiledWorkflow,
                  trace: list[PlannedRun]) -> list[dict[str, Any]]:
    """The ``planned`` policy's plan when none is given: from each shift of the
    failure schedule on (the arrival time of the first run it applies to), the split
    static ``cortex`` would choose for the new failure rate. It knows the future
    (when the mix changes and to what), so it is a reference for reactive policies,
    not something a deployment could configure from its own signals."""
    phases = sorted(cfg.workload.fail_schedule)
    if not phases or phases[0][0] > 0:   # before the first point: p_first_fail
        phases.insert(0, (0.0, cfg.workload.p_first_fail))
    start, plan = trace[0].arrival if trace else 0.0, []
    for at, p_fail in phases:
        # the workload gives run i the rate of fraction i / len(trace) of the trace
        first = next((r for i, r in enumerate(trace) if i / len(trace) >= at), None)
        if first is None and at > 0:
            continue   # a point no run reaches (fraction 1.0) changes nothing
        phase = replace(cfg.workload, p_first_fail=p_fail, fail_schedule=[])
        workload = NL2SQLWorkload(phase, cfg.seed)
        priors = _service_priors(cfg, workload)
        work = expected_stage_work(workflow, priors, workload.expected_outcomes(), seed=cfg.seed)
        split = split_engines({s: work.get(s, 1.0) for s in workflow.llm_stages},
                              cfg.num_engines)
        when = max(0.0, first.arrival - start) if at > 0 else 0.0
        if plan and when <= plan[-1]["at_s"]:
            plan[-1]["split"] = split
        else:
            plan.append({"at_s": round(when, 3), "split": split})
    return plan


def run_sim_bench(cfg: SimBenchConfig) -> dict[str, Any]:
    results, allocation, timelines, knob_rows = [], [], {}, []
    for rate in cfg.rates:
        for policy in cfg.policies:
            row, sim = run_policy(cfg, policy, rate)
            results.append(row)
            if cfg.knobs:
                knob_rows.append({"policy": policy, "rate": rate} | knob_summary(sim.finished))
            allocator = sim.controller.allocator
            if allocator is not None and is_malleable(policy):
                allocation.append({"policy": policy, "rate": rate}
                                  | allocation_summary(allocator, sim.finished))
            if cfg.timeline and allocator is not None:
                timelines[f"{policy}@{rate:g}"] = {
                    "allocator": allocator.timeline.to_dict(),
                    "slo": slo_series(sim.finished, cfg.timeline_bin_s)}
    config = {
        "workload": "nl2sql", "engine": "sim", "engines": cfg.num_engines,
        "policies": cfg.policies, "rates": cfg.rates, "requests": cfg.num_requests,
        "seed": cfg.seed, "slo_s": slo_of(cfg),
        "max_queue": cfg.max_queue, "load_bound": cfg.load_bound,
        "retry_budget": cfg.retry_budget, "late_factor": cfg.late and cfg.late.factor,
        "late_when_tipped": bool(cfg.late and cfg.late.when_tipped),
        "hold_for_memory": cfg.hold_for_memory,
        "timeout_factor": cfg.timeout_factor,
        "engine_config": cfg.engine.to_dict(),
        "workload_config": cfg.workload.to_dict(),
    }
    report: dict[str, Any] = {"config": config, "results": results}
    if allocation:
        config["allocator"] = {"policy": cfg.allocator.policy,
                               "options": cfg.allocator.policy_options,
                               "interval_s": cfg.allocator.interval_s,
                               "workflow_demand": cfg.allocator.workflow_demand,
                               "max_engines": cfg.max_engines}
        report["allocation"] = allocation
    if timelines:
        report["timelines"] = timelines
    if knob_rows:
        report["knobs"] = knob_rows
    return report


def knob_summary(runs: list[Run]) -> dict[str, Any]:
    """How many runs turned knobs, and how often each knob was turned."""
    counts: dict[str, int] = {}
    for run in runs:
        for t in turned(run):
            counts[t["knob"]] = counts.get(t["knob"], 0) + 1
    return {"runs_with_knobs": sum(1 for r in runs if turned(r)), "turns": counts}

"""NL2SQL workload model for the simulator.

Generates runs whose LLM prompts have the real agent's structure, as token
ids: ``[stage system prompt + exemplars][schema of db d][question]`` for the
generator and ``[fixer system prompt + exemplars][schema][question][failed SQL
+ error]`` for the fixer. Every random choice (database, question tokens,
output lengths, which attempts fail, tool latencies) is drawn up front from
the seed, so the same seed gives the same trace under every policy.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from cortex.checks import is_int, is_number
from cortex.core import OK, EngineRequest, ToolResult

FAIL_LABELS = ("error", "empty", "suspicious")
_VOCAB = 49_152  # SmolLM2's vocabulary size: ids look like real ones


@dataclass(slots=True)
class NL2SQLWorkloadConfig:
    """All knobs of the synthetic NL2SQL workload (defaults: an enterprise-sized agent).

    Set from a real run with ``from_profile`` (written by ``cortex bench
    --engine llamacpp``'s ``--profile-out``).
    """

    num_dbs: int = 8
    schema_tokens: int = 1500
    schema_spread: float = 0.3           # schema sizes vary +-30% across databases
    system_tokens: dict[str, int] = field(
        default_factory=lambda: {"generate": 450, "fix": 550})
    question_tokens: int = 25
    fix_extra_tokens: int = 80           # failed SQL + error message in the fixer prompt
    output_tokens: dict[str, int] = field(
        default_factory=lambda: {"generate": 60, "fix": 70})
    p_first_fail: float = 0.3
    p_fix_fail: float = 0.4
    tool_latency_s: dict[str, float] = field(
        default_factory=lambda: {"schema": 0.004, "execute": 0.02, "verify": 0.001})
    # Optional shifting workload: list of (fraction of the trace, p_first_fail).
    fail_schedule: list[tuple[float, float]] = field(default_factory=list)
    # Which databases (schema sizes and tokens): None draws them from the trace seed, so
    # every seed is another catalog as well as another trace; a number fixes the catalog
    # and seeds vary only arrivals and outcomes.
    catalog_seed: int | None = None

    def __post_init__(self) -> None:
        """Raises ValueError naming the field: counts are integers, everything else a
        finite number in range (a nan from a profile JSON would reach the simulator's
        clock or a schema size)."""
        for name, low in (("num_dbs", 1), ("schema_tokens", 1), ("question_tokens", 0),
                          ("fix_extra_tokens", 0)):
            if not is_int(getattr(self, name), low):
                raise ValueError(f"{name} must be an integer >= {low}, "
                                 f"got {getattr(self, name)!r}")
        if self.catalog_seed is not None and not is_int(self.catalog_seed, None):
            raise ValueError(f"catalog_seed must be an integer, got {self.catalog_seed!r}")
        if not (is_number(self.schema_spread) and 0.0 <= self.schema_spread < 1.0):
            raise ValueError(f"schema_spread must be in [0, 1), got {self.schema_spread!r}")
        for name in ("p_first_fail", "p_fix_fail"):
            if not (is_number(getattr(self, name)) and 0.0 <= getattr(self, name) <= 1.0):
                raise ValueError(f"{name} must be in [0, 1]")
        for name, low in (("system_tokens", 0), ("output_tokens", 1), ("tool_latency_s", 0)):
            table = getattr(self, name)
            bad = ([f"{k}: {v!r}" for k, v in table.items()
                    if not (is_number(v) and v >= low and (name == "tool_latency_s"
                                                         or is_int(v, low)))]
                   if isinstance(table, dict) else [repr(table)])
            if bad:
                kind = "a finite number" if name == "tool_latency_s" else "an integer"
                raise ValueError(f"{name} must map stages to {kind} >= {low}, got "
                                 f"{', '.join(bad)}")
        self.fail_schedule = [(float(a), float(p)) for a, p in self.fail_schedule]
        if any(not (0.0 <= a <= 1.0 and 0.0 <= p <= 1.0) for a, p in self.fail_schedule):
            raise ValueError("fail_schedule entries must be (fraction in [0, 1], p in [0, 1])")

    def mean_p_first_fail(self) -> float:
        """First-attempt failure probability averaged over the trace (schedule-aware)."""
        points = sorted(self.fail_schedule)
        if not points:
            return self.p_first_fail
        total, start, p = 0.0, 0.0, self.p_first_fail
        for at, value in points:
            total += (at - start) * p
            start, p = at, value
        return total + (1.0 - start) * p

    @classmethod
    def from_profile(cls, path: str | Path) -> NL2SQLWorkloadConfig:
        """Raises:
            ValueError: unreadable file, not a JSON object, or a bad value; the message
                names the file (keys that are not fields, e.g. ``num_runs``, are skipped).
        """
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read workload profile: {exc}") from exc
        data = data.get("workload_profile", data) if isinstance(data, dict) else data
        if not isinstance(data, dict):
            raise ValueError(f"{path}: workload profile must be a JSON object")  # noqa: TRY004
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        try:
            return cls(**known)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class PlannedRun:
    """One run of the trace with all its random outcomes fixed in advance."""

    run_id: str
    arrival: float
    db: int
    question: list[int]
    attempt_labels: list[str]            # verify label of attempt 1, 2, ...
    output_tokens: list[int]             # LLM output length per LLM call, in order
    tool_jitter: list[float]

    @property
    def inputs(self) -> dict[str, Any]:
        return {"question": f"q-{self.run_id}", "db": f"db{self.db}"}


def _segment(seed_key: str, length: int) -> list[int]:
    rng = random.Random(seed_key)
    return [rng.randrange(_VOCAB) for _ in range(length)]


class NL2SQLWorkload:
    """Builds the trace and answers the simulator's questions about it."""

    def __init__(self, config: NL2SQLWorkloadConfig, seed: int = 0) -> None:
        self.config = config
        self.seed = seed
        catalog = seed if config.catalog_seed is None else config.catalog_seed
        rng = random.Random(f"schemas-{catalog}")
        spread = config.schema_spread
        self._schemas = [_segment(f"schema-{catalog}-{d}", max(16, int(config.schema_tokens * (
            1 + rng.uniform(-spread, spread))))) for d in range(config.num_dbs)]
        self._system = {s: _segment(f"system-{s}", n) for s, n in config.system_tokens.items()}
        self.runs: dict[str, PlannedRun] = {}

    # ---- trace -------------------------------------------------------------
    def trace(self, rate: float, num_runs: int) -> list[PlannedRun]:
        """Poisson arrivals at ``rate`` runs/s; same (seed, rate, num_runs) -> same trace.

        Raises:
            ValueError: ``rate`` is not a finite number > 0 (a nan rate gives nan arrival
                times, on which the simulator never finishes; inf puts them all at 0).
        """
        if not (is_number(rate) and rate > 0):
            raise ValueError(f"arrival rate must be a finite number > 0, got {rate!r}")
        rng = random.Random(f"trace-{self.seed}")
        t, out = 0.0, []
        for i in range(num_runs):
            t += rng.expovariate(rate)
            out.append(self._plan(f"r{i}", t, rng, i / max(1, num_runs)))
        self.runs = {r.run_id: r for r in out}
        return out

    def _plan(self, run_id: str, arrival: float, rng: random.Random, frac: float) -> PlannedRun:
        cfg = self.config
        labels, p_fail = [], self._p_first_fail(frac)
        for attempt in range(8):
            fails = rng.random() < (p_fail if attempt == 0 else cfg.p_fix_fail)
            labels.append(rng.choice(FAIL_LABELS) if fails else OK)
            if not fails:
                break
        outputs = [max(1, int(rng.gauss(cfg.output_tokens["generate" if i == 0 else "fix"], 8)))
                   for i in range(len(labels))]
        return PlannedRun(run_id, arrival, rng.randrange(cfg.num_dbs),
                          [rng.randrange(_VOCAB) for _ in range(cfg.question_tokens)],
                          labels, outputs, [rng.lognormvariate(0, 0.3) for _ in range(32)])

    def _p_first_fail(self, frac: float) -> float:
        p = self.config.p_first_fail
        for start, value in self.config.fail_schedule:
            if frac >= start:
                p = value
        return p

    # ---- simulator hooks -----------------------------------------------------
    def build_request(self, call_id: str, run_id: str, stage: str, attempt: int,
                      max_tokens: int) -> EngineRequest:
        plan = self.runs[run_id]
        tokens = self._system.get(stage) or _segment(f"system-{stage}", 400)
        tokens = tokens + self._schemas[plan.db] + plan.question
        llm_index = 0 if stage == "generate" else attempt
        if stage != "generate":
            tokens = tokens + _segment(f"fix-{run_id}-{attempt}", self.config.fix_extra_tokens)
        out = plan.output_tokens[min(llm_index, len(plan.output_tokens) - 1)]
        return EngineRequest(call_id, prompt_tokens=tokens, sim_output_tokens=min(out, max_tokens))

    def tool_result(self, run_id: str, stage: str, attempt: int,
                    quality_loss: float = 0.0) -> tuple[float, ToolResult]:
        """Latency and result of a tool call, shaped like the real NL2SQL tools' output.

        ``quality_loss``: the chance that knobs applied to the run's latest LLM call
        (``EngineRequest.sim_quality_loss``) made its answer wrong. A verify step
        whose planned label is a pass fails with that probability, drawn per (seed,
        run, attempt) so every policy sees the same draw for the same knobs."""
        plan = self.runs[run_id]
        base = self.config.tool_latency_s.get(stage, 0.001)
        latency = base * plan.tool_jitter[(attempt * 3 + len(stage)) % len(plan.tool_jitter)]
        if stage == "schema":
            return latency, ToolResult(OK, {"schema": f"<schema db{plan.db}>", "tables": [],
                                            "db_path": f"db{plan.db}"})
        if stage == "execute":
            return latency, ToolResult(OK, {"sql": "SELECT 1", "columns": [], "rows": [],
                                            "truncated": False, "error": ""})
        label = plan.attempt_labels[min(attempt - 1, len(plan.attempt_labels) - 1)]
        if label == OK and quality_loss > 0:
            draw = random.Random(f"quality-{self.seed}-{run_id}-{attempt}")
            if draw.random() < quality_loss:
                label = draw.choice(FAIL_LABELS)
        return latency, ToolResult(label, {"label": label, "message": label, "sql": "SELECT 1",
                                           "rows": [], "columns": []})

    def expected_outcomes(self) -> dict[str, dict[str, float]]:
        """Outcome probabilities per stage, for the ``cortex`` engine split."""
        p1, pf = self.config.mean_p_first_fail(), self.config.p_fix_fail
        # verify sees first attempts and fixes; weight by their expected counts.
        fixes = p1 / (1 - pf) if pf < 1 else 3.0
        p_fail = (p1 + fixes * pf) / (1 + fixes)
        return {"verify": {OK: 1 - p_fail, "error": p_fail}}

    def expected_service_s(self, prefill_s_per_token: float, decode_s_per_token: float
                           ) -> dict[str, float]:
        cfg = self.config
        base = cfg.schema_tokens + cfg.question_tokens
        return {
            stage: (cfg.system_tokens.get(stage, 400) + base
                    + (cfg.fix_extra_tokens if stage == "fix" else 0)) * prefill_s_per_token
            + cfg.output_tokens.get(stage, 60) * decode_s_per_token
            for stage in ("generate", "fix")
        } | {s: v for s, v in cfg.tool_latency_s.items()}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def shifting(config: NL2SQLWorkloadConfig, low: float = 0.1, high: float = 0.7
             ) -> NL2SQLWorkloadConfig:
    """``config`` with a shifting workload: the first-attempt failure rate (and so
    the fixer's share of the work) is ``low`` for the first third of the trace,
    ``high`` for the second and ``low`` again for the last."""
    return replace(config, fail_schedule=[(0.0, low), (1 / 3, high), (2 / 3, low)])


def parse_fail_schedule(text: str) -> list[tuple[float, float]]:
    """``"0:0.1,0.25:0.7,0.75:0.1"`` -> ``[(0.0, 0.1), (0.25, 0.7), (0.75, 0.1)]``: from
    each fraction of the trace on, the first-attempt failure rate is the value.

    Raises:
        ValueError: an entry is not ``FRACTION:RATE`` with both in [0, 1], or the
            fractions do not increase.
    """
    points: list[tuple[float, float]] = []
    for entry in text.split(","):
        at, sep, p = entry.partition(":")
        try:
            point = (float(at), float(p)) if sep else None
        except ValueError:
            point = None
        if point is None or not (0.0 <= point[0] <= 1.0 and 0.0 <= point[1] <= 1.0):
            raise ValueError(f"{entry.strip()!r}: expected FRACTION:RATE, both in [0, 1]")
        if points and point[0] <= points[-1][0]:
            raise ValueError(f"{entry.strip()!r}: fractions must increase")
        points.append(point)
    return points

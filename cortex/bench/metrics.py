"""Benchmark figures from finished runs: the JSON keys every `cortex bench` result has."""
from __future__ import annotations

from typing import Any

from cortex.core import RunStatus
from cortex.engine.kvcache import block_hashes
from cortex.orchestrator.run import Run
from cortex.workload.nl2sql_sim import percentile

RESULT_KEYS = (
    "policy", "rate", "completed", "failed", "rejected", "timed_out", "throughput_rps",
    "goodput_rps", "slo_attainment", "p50_latency_s", "p99_latency_s", "prefix_hit_rate",
    "prefill_tokens_per_run", "oracle_prefill_tokens_per_run", "wall_s",
)


class OracleCache:
    """An unbounded, never-evicting block prefix cache shared by all engines:
    the fewest prompt tokens any placement could possibly compute."""

    def __init__(self, block_size: int = 16) -> None:
        self.block_size = block_size
        self._seen: set[int] = set()
        self.prefill_tokens = 0

    def observe(self, tokens: list[int]) -> None:
        if not tokens:
            return
        hashes = block_hashes(tokens, self.block_size)
        hit = 0
        for h in hashes:
            if h not in self._seen:
                break
            hit += 1
        self._seen.update(hashes)
        cached = min(hit * self.block_size, len(tokens) - 1)
        self.prefill_tokens += len(tokens) - cached


def _in_slo(run: Run) -> bool:
    return run.finished_at is not None and run.finished_at <= run.deadline + 1e-9


def summarize(policy: str, rate: float, runs: list[Run], llm_stages: set[str],
              oracle_prefill_tokens: int | None, wall_s: float) -> dict[str, Any]:
    """Compute one result row.

    A run is *finished* when its workflow ran to an answer: ``succeeded``, or ``failed``
    because the agent's retry budget ran out or a stage failed. Goodput counts finished
    runs within their SLO (whether the answer was right is accuracy, `cortex eval`);
    rejected and timed-out runs never count. Durations run from the first arrival to the
    last finish; latency percentiles are over finished runs.
    """
    count = {s: sum(1 for r in runs if r.status is s) for s in RunStatus}
    finished = [r for r in runs if r.status in (RunStatus.SUCCEEDED, RunStatus.FAILED)]
    start = min((r.arrival for r in runs), default=0.0)
    end = max((r.finished_at or r.arrival for r in runs), default=0.0)
    span = max(end - start, 1e-9)
    latencies = [r.latency_s for r in finished if r.latency_s is not None]
    in_slo = sum(1 for r in finished if _in_slo(r))
    prompt = cached = 0
    for run in runs:
        for entry in run.trace:
            if entry.stage in llm_stages:
                prompt += entry.usage.prompt_tokens
                cached += entry.usage.cached_prompt_tokens or 0
    per_run = max(1, len(finished))
    return {
        "policy": policy,
        "rate": rate,
        "completed": count[RunStatus.SUCCEEDED],
        "failed": count[RunStatus.FAILED],
        "rejected": count[RunStatus.REJECTED],
        "timed_out": count[RunStatus.TIMED_OUT],
        "throughput_rps": round(len(finished) / span, 6),
        "goodput_rps": round(in_slo / span, 6),
        "slo_attainment": round(in_slo / max(1, len(runs)), 6),
        "p50_latency_s": round(percentile(latencies, 50), 6),
        "p99_latency_s": round(percentile(latencies, 99), 6),
        "prefix_hit_rate": round(cached / prompt, 6) if prompt else 0.0,
        "prefill_tokens_per_run": round((prompt - cached) / per_run, 3),
        "oracle_prefill_tokens_per_run": (None if oracle_prefill_tokens is None
                                          else round(oracle_prefill_tokens / per_run, 3)),
        "wall_s": round(wall_s, 3),
    }

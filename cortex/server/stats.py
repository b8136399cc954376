"""Rolling figures for the dashboard and ``/v1/pools``: latency percentiles, SLO
attainment, throughput, queue waits and engine utilisation over the last minutes.

``LiveStats`` owns these windows; the service feeds it runtime events. Times
are the runtime's clock (``time.monotonic()``).

SLO attainment = runs that succeeded within their SLO / runs that ended,
excluding runs cancelled by a client (a cancel is not the server missing an SLO).
A pool's SLO attainment counts the runs that had a call in that pool.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, NamedTuple

MAX_WINDOW_S = 600.0
HISTORY_POINTS = 300


class RunSample(NamedTuple):
    t: float
    workflow: str
    status: str
    latency_s: float
    met_slo: bool
    pools: frozenset[str]


class CallSample(NamedTuple):
    t: float
    pool: str
    engine: str
    queue_wait_s: float
    service_s: float
    prompt_tokens: int
    cached_tokens: int


@dataclass(slots=True)
class Attainment:
    met: int = 0
    total: int = 0

    def add(self, met: bool) -> None:
        self.met += int(met)
        self.total += 1

    @property
    def ratio(self) -> float | None:
        return self.met / self.total if self.total else None


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


class LiveStats:
    """Rolling samples of finished runs and calls, plus lifetime SLO counters."""

    def __init__(self) -> None:
        self.runs: deque[RunSample] = deque()
        self.calls: deque[CallSample] = deque()
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY_POINTS)
        self.slo_by_pool: dict[str, Attainment] = {}
        self.slo_by_workflow: dict[str, Attainment] = {}

    # ---- feeding -------------------------------------------------------------
    def add_call(self, sample: CallSample) -> None:
        self.calls.append(sample)
        self._prune(self.calls, sample.t)

    def add_run(self, sample: RunSample) -> None:
        self.runs.append(sample)
        self._prune(self.runs, sample.t)
        if sample.status == "cancelled":
            return
        self.slo_by_workflow.setdefault(sample.workflow, Attainment()).add(sample.met_slo)
        for pool in sample.pools:
            self.slo_by_pool.setdefault(pool, Attainment()).add(sample.met_slo)

    def add_history(self, point: dict[str, Any]) -> None:
        self.history.append(point)

    @staticmethod
    def _prune(samples: deque[Any], now: float) -> None:
        while samples and samples[0].t < now - MAX_WINDOW_S:
            samples.popleft()

    # ---- windows -------------------------------------------------------------
    def run_window(self, now: float, window_s: float, workflow: str | None = None
                   ) -> dict[str, Any]:
        """Run figures over the last ``window_s`` seconds (all workflows or one)."""
        runs = [r for r in self.runs if r.t >= now - window_s
                and (workflow is None or r.workflow == workflow)]
        counted = [r for r in runs if r.status != "cancelled"]
        latencies = [r.latency_s for r in runs if r.status == "succeeded"]
        by_status: dict[str, int] = {}
        for r in runs:
            by_status[r.status] = by_status.get(r.status, 0) + 1
        return {
            "window_s": window_s,
            "finished": len(runs),
            "by_status": by_status,
            "throughput_rps": round(len(latencies) / window_s, 4),
            "p50_latency_s": _round(percentile(latencies, 50)),
            "p90_latency_s": _round(percentile(latencies, 90)),
            "p99_latency_s": _round(percentile(latencies, 99)),
            "slo_attainment": _round(sum(r.met_slo for r in counted) / len(counted)
                                     if counted else None),
        }

    def pool_window(self, pool: str, now: float, window_s: float, capacity: int
                    ) -> dict[str, Any]:
        """Call figures of one pool over the last ``window_s`` seconds."""
        calls = [c for c in self.calls if c.pool == pool and c.t >= now - window_s]
        waits = [c.queue_wait_s for c in calls]
        prompt = sum(c.prompt_tokens for c in calls)
        cached = sum(c.cached_tokens for c in calls)
        busy = sum(c.service_s for c in calls)
        return {
            "window_s": window_s,
            "calls": len(calls),
            "calls_per_s": round(len(calls) / window_s, 4),
            "p50_queue_wait_s": _round(percentile(waits, 50)),
            "p99_queue_wait_s": _round(percentile(waits, 99)),
            "p50_service_s": _round(percentile([c.service_s for c in calls], 50)),
            "prefix_hit_rate": _round(cached / prompt if prompt else None),
            "utilisation": _round(min(1.0, busy / (window_s * capacity)) if capacity else None),
        }

    def engine_utilisation(self, engine: str, now: float, window_s: float,
                           capacity: int) -> float:
        busy = sum(c.service_s for c in self.calls if c.engine == engine
                   and c.t >= now - window_s)
        return round(min(1.0, busy / (window_s * max(1, capacity))), 4)

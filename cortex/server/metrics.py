"""Prometheus metrics (``GET /metrics``).

Counters and histograms are updated from runtime events as they happen;
gauges (queue depth, in-flight calls, engine health and utilisation, SLO
attainment) are read from the pools at scrape time. Each service has its own
``CollectorRegistry``, so several servers can live in one process (tests).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = CONTENT_TYPE_LATEST
_WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                 5.0, 10.0, 30.0)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
                    60.0, 120.0)

GaugeRows = Callable[[], dict[str, list[tuple[dict[str, str], float]]]]

_GAUGES = {
    "cortex_pool_queue_depth": "Calls waiting in the pool's queue.",
    "cortex_pool_in_flight": "Calls running on the pool's engines.",
    "cortex_pool_capacity": "Calls the pool's healthy and unhealthy engines can run at once.",
    "cortex_pool_max_queue": "Bounded queue length of the pool.",
    "cortex_engine_healthy": "1 if the engine is healthy, else 0.",
    "cortex_engine_in_flight": "Calls running on the engine.",
    "cortex_engine_utilisation": "Busy fraction of the engine's capacity over the last minute.",
    "cortex_slo_attainment_ratio": "Share of ended runs that met their SLO (lifetime, "
                                   "client cancels excluded).",
    "cortex_runs_active": "Admitted runs not yet in a terminal state.",
    "cortex_server_ready": "1 when engines are up and the server admits runs.",
}


class _SnapshotCollector(Collector):
    def __init__(self, rows: GaugeRows) -> None:
        self._rows = rows

    def collect(self) -> Iterable[Metric]:
        rows = self._rows()
        for name, doc in _GAUGES.items():
            samples = rows.get(name, [])
            labels = sorted(samples[0][0]) if samples else []
            family = GaugeMetricFamily(name, doc, labels=labels)
            for label_values, value in samples:
                family.add_metric([label_values[k] for k in labels], value)
            yield family


class ServerMetrics:
    """Args:
        rows: returns the gauge samples at scrape time, by metric name.
    """

    def __init__(self, rows: GaugeRows) -> None:
        disable_created_metrics()  # the *_created series only add noise to a server's scrape
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls = Counter("cortex_stage_calls", "Finished stage calls.",
                             ["pool", "stage", "outcome"], registry=r)
        self.cancelled = Counter("cortex_stage_calls_cancelled", "Stage calls stopped in "
                                 "flight (run cancelled, timed out or hedge lost).",
                                 ["pool", "stage"], registry=r)
        self.queue_wait = Histogram("cortex_stage_queue_wait_seconds", "Time a call waited "
                                    "in its pool's queue.", ["pool", "stage"],
                                    buckets=_WAIT_BUCKETS, registry=r)
        self.service = Histogram("cortex_stage_service_seconds", "Engine or tool time of a "
                                 "call.", ["pool", "stage"], buckets=_LATENCY_BUCKETS,
                                 registry=r)
        self.prompt_tokens = Counter("cortex_prompt_tokens", "Prompt tokens of LLM calls.",
                                     ["pool"], registry=r)
        self.cached_tokens = Counter("cortex_cached_prompt_tokens", "Prompt tokens served "
                                     "from an engine's prefix cache.", ["pool"], registry=r)
        self.output_tokens = Counter("cortex_output_tokens", "Generated tokens.", ["pool"],
                                     registry=r)
        self.runs = Counter("cortex_runs", "Runs by terminal status.", ["workflow", "status"],
                            registry=r)
        self.runs_met_slo = Counter("cortex_runs_met_slo", "Runs that succeeded within their "
                                    "SLO.", ["workflow"], registry=r)
        self.run_latency = Histogram("cortex_run_latency_seconds", "End-to-end latency of "
                                     "succeeded runs.", ["workflow"],
                                     buckets=_LATENCY_BUCKETS, registry=r)
        self.http_rejected = Counter("cortex_admission_rejected", "Requests refused before a "
                                     "run was created.", ["reason"], registry=r)
        r.register(_SnapshotCollector(rows))

    def observe_call(self, event: dict[str, Any], queue_wait_s: float | None) -> None:
        pool, stage = event["pool"], event["stage"]
        self.calls.labels(pool, stage, event.get("outcome", "")).inc()
        self.service.labels(pool, stage).observe(event.get("service_s") or 0.0)
        if queue_wait_s is not None:
            self.queue_wait.labels(pool, stage).observe(queue_wait_s)
        if event.get("prompt_tokens"):
            self.prompt_tokens.labels(pool).inc(event["prompt_tokens"])
            self.cached_tokens.labels(pool).inc(event.get("cached_prompt_tokens") or 0)
        if event.get("output_tokens"):
            self.output_tokens.labels(pool).inc(event["output_tokens"])

    def observe_run(self, workflow: str, status: str, latency_s: float | None,
                    met_slo: bool) -> None:
        self.runs.labels(workflow, status).inc()
        if met_slo:
            self.runs_met_slo.labels(workflow).inc()
        if status == "succeeded" and latency_s is not None:
            self.run_latency.labels(workflow).observe(latency_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)

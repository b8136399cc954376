"""Run and stage-call state. The orchestrator owns both; pools only stamp
dispatch facts (``engine_id``, ``started_at``) on the calls they hold."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cortex.core import CallResult, EngineRequest, RunStatus, TraceEntry
from cortex.workflow.graph import CompiledWorkflow, Stage


@dataclass(slots=True, eq=False)
class StageCall:
    """One call of a stage for one run (one of ``fanout`` siblings)."""

    call_id: str
    run_id: str
    stage: Stage
    attempt: int
    fanout_index: int
    args: dict[str, Any]
    deadline: float
    expected_service_s: float
    # Slack-ordering key: deadline - expected remaining service time. Slack at
    # time t is ``slack_key - t``, so ordering by the key orders by slack.
    slack_key: float
    queued_at: float = 0.0
    started_at: float | None = None
    engine_id: str = ""
    pool: str = ""
    request: EngineRequest | None = None
    seq: int = 0
    num_retries: int = 0

    def slack(self, now: float) -> float:
        return self.slack_key - now

    def can_meet_slo(self, now: float, late_factor: float) -> bool:
        """Slack at least ``-late_factor`` x the call's own expected service; later than
        that its run misses the SLO. Pools serving late calls last and the allocator's
        backlog signal share this test."""
        return self.slack(now) >= -late_factor * self.expected_service_s


@dataclass(slots=True)
class FanoutState:
    pending: set[str]
    results: list[CallResult] = field(default_factory=list)
    joined: bool = False


@dataclass(slots=True, eq=False)
class Run:
    run_id: str
    workflow: CompiledWorkflow
    inputs: dict[str, Any]
    arrival: float
    deadline: float
    timeout_at: float
    status: RunStatus = RunStatus.RUNNING
    reason: str = ""
    context: dict[str, Any] = field(default_factory=dict)
    trace: list[TraceEntry] = field(default_factory=list)
    visits: dict[str, int] = field(default_factory=dict)
    edge_counts: dict[str, int] = field(default_factory=dict)
    inflight: dict[str, StageCall] = field(default_factory=dict)
    fanouts: dict[str, FanoutState] = field(default_factory=dict)
    finished_at: float | None = None
    output: Any = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def latency_s(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.arrival

    @property
    def met_slo(self) -> bool:
        return (self.status is RunStatus.SUCCEEDED and self.finished_at is not None
                and self.finished_at <= self.deadline + 1e-9)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "workflow": self.workflow.name,
            "status": self.status.value,
            "reason": self.reason,
            "latency_s": self.latency_s,
            "met_slo": self.met_slo,
            "output": self.output,
            "trace": [t.to_dict() for t in self.trace],
            "knobs_turned": list(self.meta.get("knobs_turned", [])),
        }

"""Online per-stage estimates: service time (EWMA from configured priors) and
outcome frequencies, used to predict the remaining work on a run's most likely path."""
from __future__ import annotations

from collections import defaultdict

from cortex.core import OK
from cortex.workflow.graph import END, CompiledWorkflow


class StageEstimator:
    """Learns service times and outcome mix per (workflow, stage).

    Args:
        alpha: EWMA weight of a new observation.
        prior_weight: pseudo-count given to ``ok`` before any outcome is seen,
            so an unobserved stage is assumed to succeed.
    """

    def __init__(self, alpha: float = 0.2, prior_weight: float = 2.0) -> None:
        self.alpha = alpha
        self.prior_weight = prior_weight
        self._service: dict[tuple[str, str], float] = {}
        self._outcomes: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
        self._remaining: dict[tuple[str, str], float] = {}

    def service_s(self, wf: CompiledWorkflow, stage: str) -> float:
        return self._service.get((wf.name, stage), wf.stages[stage].prior_service_s)

    def seed(self, wf: CompiledWorkflow, stage: str, service_s: float) -> None:
        """Replace the configured prior of a stage (e.g. from a calibration profile)."""
        self._service[(wf.name, stage)] = service_s
        self._remaining.clear()

    def observe(self, wf: CompiledWorkflow, stage: str, service_s: float, outcome: str) -> None:
        key = (wf.name, stage)
        old = self._service.get(key)
        self._service[key] = service_s if old is None else old + self.alpha * (service_s - old)
        counts = self._outcomes[key]
        counts[outcome] = counts.get(outcome, 0.0) + 1.0
        self._remaining.clear()

    def outcome_probs(self, wf: CompiledWorkflow, stage: str) -> dict[str, float]:
        counts = dict(self._outcomes.get((wf.name, stage), {}))
        counts[OK] = counts.get(OK, 0.0) + self.prior_weight
        total = sum(counts.values())
        return {k: v / total for k, v in counts.items()}

    def remaining_s(self, wf: CompiledWorkflow, stage: str) -> float:
        """Expected service time from ``stage`` (inclusive) to the end on the most likely path."""
        key = (wf.name, stage)
        if key not in self._remaining:
            self._remaining[key] = self._walk(wf, stage)
        return self._remaining[key]

    def _walk(self, wf: CompiledWorkflow, stage: str) -> float:
        total, seen, node = 0.0, set(), stage
        while node != END and node not in seen:
            seen.add(node)
            total += self.service_s(wf, node)
            node = self._likely_next(wf, node)
        return total

    def _likely_next(self, wf: CompiledWorkflow, stage: str) -> str:
        edges = wf.stages[stage].edges
        if not edges:
            return END
        probs = self.outcome_probs(wf, stage)
        best = max(probs, key=lambda o: (probs[o], o == OK))
        for edge in edges:
            if edge.matches(best):
                return edge.target
        return END

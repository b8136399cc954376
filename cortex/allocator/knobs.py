"""Knobs: ways a workflow lets Cortex shrink a run's computation under pressure.

A workflow declares knobs, each with a cost (its quality loss; cheapest first):

* ``model``: serve a stage's calls with a lighter model (``request.model``);
* ``retry_budget``: fewer traversals of the retry edges into a stage;
* ``max_tokens``: a lower cap on a stage's output tokens.

When a run's slack goes negative as it enters a stage, the orchestrator turns
the cheapest knob it has not turned yet for that run, among those whose stage
is still ahead (reachable from the stage entered), and records the turn in
``run.meta["knobs_turned"]`` (the run's result says which knobs were turned,
when, and at what slack). Knobs act on that run only.

Declared in Python (``Knob``) or in the workflow YAML (``parse_knobs``)::

    knobs:
      - {name: short-sql, stage: generate, max_tokens: 48, cost: 0.1}
      - {name: one-fix, stage: fix, retry_budget: 1, cost: 0.3}
      - {name: light-fixer, stage: fix, model: gemma3-270m, cost: 0.5}
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from cortex.orchestrator.run import Run, StageCall
from cortex.workflow.graph import CompiledWorkflow, Edge

TURNED = "knobs_turned"  # key in Run.meta


class KnobKind(str, enum.Enum):
    MODEL = "model"
    RETRY_BUDGET = "retry_budget"
    MAX_TOKENS = "max_tokens"


@dataclass(frozen=True, slots=True)
class Knob:
    """One degradation of one stage. ``value``: model name, retry budget or token cap."""

    name: str
    kind: KnobKind
    stage: str
    value: str | int
    cost: float

    def __post_init__(self) -> None:
        if self.cost < 0:
            raise ValueError(f"knob {self.name!r}: cost must be >= 0, got {self.cost}")
        if self.kind is KnobKind.MODEL:
            if not isinstance(self.value, str) or not self.value:
                raise ValueError(f"knob {self.name!r}: model must be a non-empty name")
        elif not isinstance(self.value, int) or isinstance(self.value, bool) or self.value < (
                0 if self.kind is KnobKind.RETRY_BUDGET else 1):
            raise ValueError(f"knob {self.name!r}: {self.kind.value} must be an integer "
                             f">= {0 if self.kind is KnobKind.RETRY_BUDGET else 1}, "
                             f"got {self.value!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"knob": self.name, "kind": self.kind.value, "stage": self.stage,
                "value": self.value, "cost": self.cost}


@dataclass(frozen=True, slots=True)
class KnobSet:
    """A workflow's knobs, cheapest first (ties keep declaration order)."""

    knobs: tuple[Knob, ...] = ()

    def __post_init__(self) -> None:
        names = [k.name for k in self.knobs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate knob names in {names}")
        ordered = sorted(enumerate(self.knobs), key=lambda ik: (ik[1].cost, ik[0]))
        object.__setattr__(self, "knobs", tuple(k for _, k in ordered))

    def next_to_turn(self, run: Run, stage: str) -> Knob | None:
        """The cheapest knob not yet turned for ``run`` that can still act: its
        stage is reachable from ``stage`` (inclusive), the stage being entered."""
        done = {t["knob"] for t in turned(run)}
        ahead = reachable(run.workflow, stage)
        return next((k for k in self.knobs if k.name not in done and k.stage in ahead), None)


def reachable(workflow: CompiledWorkflow, stage: str) -> set[str]:
    """Stages reachable from ``stage`` along any edge, ``stage`` included."""
    seen, todo = {stage}, [stage]
    while todo:
        for edge in workflow.stages[todo.pop()].edges:
            if edge.target in workflow.stages and edge.target not in seen:
                seen.add(edge.target)
                todo.append(edge.target)
    return seen


# ---- per-run effects ----------------------------------------------------------------
def turned(run: Run) -> list[dict[str, Any]]:
    """The knobs turned for ``run``, in order (empty when none)."""
    return run.meta.get(TURNED, [])


def turn(run: Run, knob: Knob, slack_s: float, now: float) -> None:
    """Record that ``knob`` is turned for ``run`` from ``now`` on."""
    run.meta.setdefault(TURNED, []).append(
        knob.to_dict() | {"at_s": round(now - run.arrival, 6), "slack_s": round(slack_s, 6)})


def edge_limit(run: Run, edge: Edge) -> int | None:
    """``edge.max_traversals``, lowered by any retry-budget knob turned on its target."""
    limit = edge.max_traversals
    for t in turned(run):
        if t["kind"] == KnobKind.RETRY_BUDGET.value and t["stage"] == edge.target \
                and limit is not None:
            limit = min(limit, int(t["value"]))
    return limit


def apply_to_request(run: Run, call: StageCall) -> None:
    """Apply the run's turned model / max-tokens knobs of ``call``'s stage to its request.

    The applied knobs' costs, each read as a probability (clamped to [0, 1]),
    compound into ``request.sim_quality_loss``: the chance that the call's answer is
    wrong because of the knobs. Only simulated outcomes use it (the NL2SQL workload
    model's verify step); real engines ignore it. Applying twice changes nothing."""
    request = call.request
    if request is None:
        return
    keep = 1.0
    for t in turned(run):
        if t["stage"] != call.stage.name:
            continue
        if t["kind"] in (KnobKind.MODEL.value, KnobKind.MAX_TOKENS.value):
            keep *= 1.0 - min(1.0, max(0.0, float(t["cost"])))
        if t["kind"] == KnobKind.MODEL.value:
            request.model = str(t["value"])
        elif t["kind"] == KnobKind.MAX_TOKENS.value:
            cap = int(t["value"])
            request.params = replace(request.params, max_tokens=min(request.params.max_tokens,
                                                                    cap))
            if request.sim_output_tokens is not None:
                request.sim_output_tokens = min(request.sim_output_tokens, cap)
    request.sim_quality_loss = 1.0 - keep


# ---- declarations ---------------------------------------------------------------------
def parse_knobs(raw: Any, workflow: CompiledWorkflow, source: str = "<knobs>") -> KnobSet:
    """Validate a ``knobs:`` list against ``workflow``.

    Raises:
        ValueError: naming the file and ``knobs[i]`` field that is wrong.
    """
    if raw is None:
        return KnobSet()
    if not isinstance(raw, list):
        raise ValueError(f"{source}: knobs: must be a list of knobs")  # noqa: TRY004
    return KnobSet(tuple(_knob(item, f"knobs[{i}]", workflow, source)
                         for i, item in enumerate(raw)))


def _knob(item: Any, path: str, workflow: CompiledWorkflow, source: str) -> Knob:
    if not isinstance(item, dict):
        raise ValueError(f"{source}: {path}: each knob must be a mapping")  # noqa: TRY004
    kinds = [k for k in KnobKind if k.value in item]
    if len(kinds) != 1:
        raise ValueError(f"{source}: {path}: give exactly one of "
                         f"{', '.join(k.value for k in KnobKind)}")
    stage = item.get("stage")
    if stage not in workflow.stages or not workflow.stages[stage].is_llm \
            and kinds[0] is not KnobKind.RETRY_BUDGET:
        raise ValueError(f"{source}: {path}.stage: {stage!r} is not an LLM stage of workflow "
                         f"{workflow.name!r}")
    cost = item.get("cost", 1.0)
    if not isinstance(cost, (int, float)) or isinstance(cost, bool):
        raise ValueError(f"{source}: {path}.cost: must be a number, "  # noqa: TRY004
                         f"got {cost!r}")
    try:
        return Knob(str(item.get("name") or f"{kinds[0].value}-{stage}"), kinds[0], stage,
                    item[kinds[0].value], float(cost))
    except ValueError as exc:
        raise ValueError(f"{source}: {path}: {exc}") from None


def load_knobs(workflow: CompiledWorkflow) -> KnobSet:
    """The ``knobs:`` declared in the YAML file a workflow was compiled from (none
    for builder workflows; the workflow compiler ignores the key)."""
    path = Path(workflow.source)
    if not path.is_file():
        return KnobSet()
    spec = yaml.safe_load(path.read_text()) or {}
    return parse_knobs(spec.get("knobs") if isinstance(spec, dict) else None, workflow,
                       str(path))


def nl2sql_knobs(light_model: str = "gemma3-270m") -> KnobSet:
    """Default knobs of the NL2SQL agent: shorter SQL, one fix, then a lighter fixer."""
    return KnobSet((
        Knob("short-sql", KnobKind.MAX_TOKENS, "generate", 48, 0.1),
        Knob("short-fix", KnobKind.MAX_TOKENS, "fix", 48, 0.15),
        Knob("one-fix", KnobKind.RETRY_BUDGET, "fix", 1, 0.3),
        Knob("light-fixer", KnobKind.MODEL, "fix", light_model, 0.5),
    ))

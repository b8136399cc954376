"""Compiled workflow graph: immutable, validated, shared by every runtime.

The compiler (``cortex.workflow.compiler``) owns construction; nothing mutates
a ``CompiledWorkflow`` afterwards, so runs, pools and the simulator may share it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from cortex.core import ERROR, SamplingParams, StageKind

END = "$end"
JOIN_FIRST_OK = "first_ok"
JOIN_ALL = "all"
TEMPLATE_VAR = re.compile(r"\{\{\s*([A-Za-z_][\w.]*)\s*\}\}")
_OPENING = re.compile(r"(?=\{\{)")  # every "{{", overlapping ones too


@dataclass(frozen=True, slots=True)
class Edge:
    """Taken when the stage's outcome is in ``outcomes``.

    An edge without ``when`` (``outcomes=None``) takes any outcome except
    ``error``: a failed stage never flows on silently; handle ``error`` explicitly.
    """

    source: str
    target: str
    outcomes: frozenset[str] | None
    max_traversals: int | None = None

    @property
    def edge_id(self) -> str:
        return f"{self.source}->{self.target}"

    def matches(self, outcome: str) -> bool:
        if self.outcomes is None:
            return outcome != ERROR
        return outcome in self.outcomes


@dataclass(frozen=True, slots=True)
class LlmSpec:
    system: str
    user: str
    params: SamplingParams
    model: str | None = None
    parse: str = "text"


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    kind: StageKind
    edges: tuple[Edge, ...]
    llm: LlmSpec | None = None
    tool: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    fanout: int = 1
    join: str = JOIN_FIRST_OK
    output_as: str | None = None
    prior_service_s: float = 0.0

    @property
    def is_llm(self) -> bool:
        return self.kind is StageKind.LLM


@dataclass(frozen=True, slots=True)
class CompiledWorkflow:
    name: str
    inputs: tuple[str, ...]
    stages: dict[str, Stage]
    entry: str
    # stage whose latest output is the run's answer; None: several stages can end a run
    # and the run answers with the one it ended at (docs/workflows.md "Output")
    output: str | None
    source: str
    default_slo_s: float | None = None
    description: str = ""

    def stage(self, name: str) -> Stage:
        return self.stages[name]

    @property
    def llm_stages(self) -> list[str]:
        return [s.name for s in self.stages.values() if s.is_llm]


def template_problem(text: str) -> str | None:
    """Why ``text`` is not a well-formed template, or None.

    Every ``{{`` must open a placeholder ``{{ name }}`` or ``{{ name.field }}`` (a single
    ``{`` just before one stays text, as does a ``}}`` on its own, e.g. in JSON); the
    renderer would otherwise send the broken placeholder to the model as it stands.
    """
    matches = list(TEMPLATE_VAR.finditer(text))
    starts = {m.start() for m in matches}
    for m in matches:
        if "" in m.group(1).split("."):
            return f"placeholder {m.group(0)!r} has an empty field name"
    for opening in _OPENING.finditer(text):
        i = opening.start()
        if i not in starts and i + 1 not in starts:
            snippet = text[i:i + 24] + ("..." if len(text) > i + 24 else "")
            return (f"'{{{{' at character {i} does not open a placeholder "
                    f"{{{{ name }}}} or {{{{ name.field }}}}: {snippet!r}")
    return None

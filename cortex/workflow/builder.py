"""A small Python builder that emits the same spec dict as a YAML file.

    wf = WorkflowBuilder("nl2sql", inputs=["question", "db"])
    wf.tool("schema", "sql.schema", args={"db": "{{db}}"}).then("generate")
    wf.llm("generate", user="{{question}}", max_tokens=64).then("execute")
    ...
    compiled = wf.compile()
"""
from __future__ import annotations

from typing import Any

from cortex.workflow.compiler import compile_workflow
from cortex.workflow.graph import END, CompiledWorkflow


class StageBuilder:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec

    def then(self, target: str) -> StageBuilder:
        """Unconditional edge (taken for any outcome not matched by an earlier edge)."""
        return self._add_edge({"goto": target})

    def on(self, when: str | list[str], target: str, max_traversals: int | None = None
           ) -> StageBuilder:
        """Edge taken when the stage outcome is ``when`` (a label or list of labels)."""
        edge: dict[str, Any] = {"when": when, "goto": target}
        if max_traversals is not None:
            edge["max_traversals"] = max_traversals
        return self._add_edge(edge)

    def end(self, when: str | list[str] | None = None) -> StageBuilder:
        return self._add_edge({"goto": END} if when is None else {"when": when, "goto": END})

    def _add_edge(self, edge: dict[str, Any]) -> StageBuilder:
        self.spec.setdefault("next", []).append(edge)
        return self


class WorkflowBuilder:
    def __init__(self, name: str, inputs: list[str] | None = None, output: str | None = None,
                 slo_ms: float | None = None) -> None:
        self.spec: dict[str, Any] = {"name": name, "inputs": list(inputs or []), "stages": []}
        if output:
            self.spec["output"] = output
        if slo_ms:
            self.spec["slo_ms"] = slo_ms

    def llm(self, name: str, user: str, system: str = "", **options: Any) -> StageBuilder:
        stage_keys = ("fanout", "join", "output_as", "expected_service_ms")
        llm = {"user": user, "system": system}
        llm.update({k: v for k, v in options.items() if k not in stage_keys})
        return self._add({"name": name, "llm": llm,
                          **{k: v for k, v in options.items() if k in stage_keys}})

    def tool(self, name: str, tool: str, args: dict[str, Any] | None = None,
             **options: Any) -> StageBuilder:
        return self._add({"name": name, "tool": tool, "args": dict(args or {}), **options})

    def _add(self, stage: dict[str, Any]) -> StageBuilder:
        self.spec["stages"].append(stage)
        return StageBuilder(stage)

    def compile(self, **kwargs: Any) -> CompiledWorkflow:
        return compile_workflow(self.spec, source="<builder>", **kwargs)

"""Compile a workflow spec (a dict from YAML or the builder) into a validated graph.

Both front ends produce the same plain-dict spec, so they compile to the same
``CompiledWorkflow``. Every error names the source, the field path and the stage.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from cortex.checks import is_int, is_number
from cortex.core import SamplingParams, StageKind
from cortex.workflow.errors import WorkflowError
from cortex.workflow.graph import (
    END,
    JOIN_ALL,
    JOIN_FIRST_OK,
    TEMPLATE_VAR,
    CompiledWorkflow,
    Edge,
    LlmSpec,
    Stage,
    template_problem,
)

DEFAULT_PRIOR_S = {StageKind.LLM: 1.0, StageKind.TOOL: 0.05}
_SAMPLING_FIELDS = ("max_tokens", "temperature", "top_p", "stop", "seed")
# The keys each section knows; anything else is a typo that would be silently ignored.
WORKFLOW_KEYS = ("name", "description", "inputs", "output", "slo_ms", "stages", "knobs")
STAGE_KEYS = ("name", "tool", "args", "llm", "next", "output_as", "fanout", "join",
              "expected_service_ms")
LLM_KEYS = ("system", "user", "prompt", *_SAMPLING_FIELDS, "model", "parse")
EDGE_KEYS = ("when", "goto", "max_traversals")


def load_workflow(path: str | Path, tool_exists: Callable[[str], bool] | None = None
                  ) -> CompiledWorkflow:
    """Read and compile a YAML workflow file.

    Raises:
        WorkflowError: unreadable file, bad YAML, or an invalid spec (message names the field).
    """
    source = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise WorkflowError(source, "", f"cannot read workflow file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise WorkflowError(source, "", f"invalid YAML: {exc}") from None
    return compile_workflow(data, source=source, tool_exists=tool_exists)


def compile_workflow(spec: Any, source: str = "<builder>",
                     tool_exists: Callable[[str], bool] | None = None) -> CompiledWorkflow:
    """Validate ``spec`` and build the graph.

    Args:
        spec: the workflow as plain data (see docs/workflows.md).
        source: file name (or ``<builder>``) used in error messages.
        tool_exists: predicate for tool names; defaults to the built-in tool registry.
    """
    return _Compiler(source, tool_exists or _registry_has_tool).compile(spec)


def _registry_has_tool(name: str) -> bool:
    from cortex.tools import TOOLS, load_builtin_tools

    load_builtin_tools()
    return name in TOOLS


class _Compiler:
    def __init__(self, source: str, tool_exists: Callable[[str], bool]) -> None:
        self.source = source
        self.tool_exists = tool_exists

    def fail(self, path: str, message: str, stage: str | None = None) -> WorkflowError:
        return WorkflowError(self.source, path, message, stage)

    def check_keys(self, raw: dict[Any, Any], known: tuple[str, ...], path: str, what: str,
                   stage: str | None = None) -> None:
        unknown = [key for key in raw if key not in known]
        if unknown:
            key = unknown[0]
            raise self.fail(f"{path}.{key}" if path else str(key),
                            f"unknown key {key!r} in {what}; known: {', '.join(known)}", stage)

    def compile(self, spec: Any) -> CompiledWorkflow:
        if not isinstance(spec, dict):
            raise self.fail("", "a workflow must be a mapping with 'name' and 'stages'")
        self.check_keys(spec, WORKFLOW_KEYS, "", "a workflow")
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            raise self.fail("name", "missing or empty workflow name")
        inputs = self._inputs(spec.get("inputs", []))
        raw_stages = spec.get("stages")
        if not isinstance(raw_stages, list) or not raw_stages:
            raise self.fail("stages", "a workflow needs a non-empty list of stages")
        names = self._stage_names(raw_stages)
        stages = {n: self._stage(raw, f"stages[{i}]", names)
                  for i, (n, raw) in enumerate(zip(names, raw_stages))}
        entry = names[0]
        self._check_reachable(stages, entry, names)
        self._check_loops(stages, names)
        self._check_templates(stages, inputs, entry)
        output = self._output(spec.get("output"), stages, entry, names)
        slo = spec.get("slo_ms")
        if slo is not None and (not is_number(slo) or slo <= 0):
            raise self.fail("slo_ms", f"must be a positive number of milliseconds, got {slo!r}")
        return CompiledWorkflow(
            name=name, inputs=inputs, stages=stages, entry=entry, output=output,
            source=self.source, default_slo_s=None if slo is None else slo / 1000.0,
            description=str(spec.get("description", "")),
        )

    def _output(self, raw: Any, stages: dict[str, Stage], entry: str, names: list[str]
                ) -> str | None:
        """The stage whose latest output is the run's answer.

        Omitted: the only stage a run can succeed at (an edge to ``$end``, or no edges);
        None when there are several, and the run answers with the output of the stage it
        ended at (the orchestrator). Declared: it must have run whenever a run succeeds.
        """
        enders = [n for n in names
                  if not stages[n].edges or any(e.target == END for e in stages[n].edges)]
        if raw is None:
            return enders[0] if len(enders) == 1 else None
        if not isinstance(raw, str) or raw not in stages:
            raise self.fail("output", f"unknown stage {raw!r}; known: {', '.join(names)}")
        for end in enders:
            unset = None if _sets(stages[end], raw) else _unset_path(stages, entry, end, raw)
            if unset is not None:
                raise self.fail("output", f"stage {raw!r} may not have run when a run ends at "
                                f"stage {end!r} (path start -> {' -> '.join(unset)} -> "
                                f"{END}); name a stage that runs before every end, or omit "
                                "output to answer with the stage the run ended at")
        return raw

    def _inputs(self, raw: Any) -> tuple[str, ...]:
        if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
            raise self.fail("inputs", f"must be a list of input names, got {raw!r}")
        for i, name in enumerate(raw):
            if name in raw[:i]:
                raise self.fail(f"inputs[{i}]", f"duplicate input name {name!r}")
        return tuple(raw)

    def _stage_names(self, raw_stages: list[Any]) -> list[str]:
        names: list[str] = []
        for i, raw in enumerate(raw_stages):
            if not isinstance(raw, dict):
                raise self.fail(f"stages[{i}]", "each stage must be a mapping")
            name = raw.get("name")
            if not isinstance(name, str) or not name.isidentifier():
                raise self.fail(f"stages[{i}].name", f"stage name must be an identifier, got {name!r}")
            if name in names:
                raise self.fail(f"stages[{i}].name", "duplicate stage name", name)
            names.append(name)
        return names

    def _stage(self, raw: dict[str, Any], path: str, names: list[str]) -> Stage:
        name = raw["name"]
        self.check_keys(raw, STAGE_KEYS, path, "a stage", name)
        has_llm, has_tool = "llm" in raw, "tool" in raw
        if has_llm == has_tool:
            raise self.fail(path, "a stage needs exactly one of 'llm' or 'tool'", name)
        kind = StageKind.LLM if has_llm else StageKind.TOOL
        if has_llm and "args" in raw:
            raise self.fail(f"{path}.args", "'args' belongs to tool stages; an llm stage's "
                            "templates are llm.system and llm.user", name)
        llm = self._llm(raw["llm"], f"{path}.llm", name) if has_llm else None
        tool = raw.get("tool")
        if has_tool and (not isinstance(tool, str) or not self.tool_exists(tool)):
            raise self.fail(f"{path}.tool", f"unknown tool {tool!r}", name)
        args = raw.get("args", {})
        if not isinstance(args, dict):
            raise self.fail(f"{path}.args", "must be a mapping of argument templates", name)
        fanout, join = raw.get("fanout", 1), raw.get("join", JOIN_FIRST_OK)
        if not is_int(fanout) or fanout < 1:
            raise self.fail(f"{path}.fanout", f"must be an integer >= 1, got {fanout!r}", name)
        if join not in (JOIN_FIRST_OK, JOIN_ALL):
            raise self.fail(f"{path}.join", f"must be '{JOIN_FIRST_OK}' or '{JOIN_ALL}'", name)
        prior = raw.get("expected_service_ms")
        if prior is not None and (not is_number(prior) or prior <= 0):
            raise self.fail(f"{path}.expected_service_ms", "must be a positive number", name)
        output_as = raw.get("output_as")
        if output_as is not None and (not isinstance(output_as, str) or not output_as.isidentifier()):
            raise self.fail(f"{path}.output_as", "must be an identifier", name)
        return Stage(
            name=name, kind=kind, edges=self._edges(raw.get("next"), f"{path}.next", name, names),
            llm=llm, tool=tool, args=args, fanout=fanout, join=join, output_as=output_as,
            prior_service_s=prior / 1000.0 if prior else DEFAULT_PRIOR_S[kind],
        )

    def _llm(self, raw: Any, path: str, stage: str) -> LlmSpec:
        if not isinstance(raw, dict):
            raise self.fail(path, "must be a mapping with 'user' (and optional 'system')", stage)
        self.check_keys(raw, LLM_KEYS, path, "an llm section", stage)
        user = raw.get("user", raw.get("prompt"))
        if not isinstance(user, str) or not user.strip():
            raise self.fail(f"{path}.user", "missing prompt template", stage)
        system = raw.get("system", "")
        if not isinstance(system, str):
            raise self.fail(f"{path}.system", "must be a string", stage)
        params = self._sampling(raw, path, stage)
        model = raw.get("model")
        if model is not None and (not isinstance(model, str) or not model.strip()):
            raise self.fail(f"{path}.model", f"must be a model name or null, got {model!r}",
                            stage)
        parse = raw.get("parse", "text")
        if parse not in ("text", "sql"):
            raise self.fail(f"{path}.parse", f"unknown parser {parse!r} (known: text, sql)", stage)
        return LlmSpec(system=system, user=user, params=params, model=model, parse=parse)

    def _sampling(self, raw: dict[str, Any], path: str, stage: str) -> SamplingParams:
        """The sampling fields, each checked for its type and range (YAML ``true`` is not a
        number here, and ``stop: "END"`` is one stop sequence, not three)."""
        kwargs: dict[str, Any] = {}
        if "max_tokens" in raw:
            value = raw["max_tokens"]
            if not is_int(value) or value < 1:
                raise self.fail(f"{path}.max_tokens", f"must be an integer >= 1, got {value!r}",
                                stage)
            kwargs["max_tokens"] = value
        if "temperature" in raw:
            value = raw["temperature"]
            if not is_number(value) or not 0 <= value <= 2:
                raise self.fail(f"{path}.temperature",
                                f"must be a number from 0 to 2, got {value!r}", stage)
            kwargs["temperature"] = float(value)
        if "top_p" in raw:
            value = raw["top_p"]
            if not is_number(value) or not 0 < value <= 1:
                raise self.fail(f"{path}.top_p",
                                f"must be a number above 0 and at most 1, got {value!r}", stage)
            kwargs["top_p"] = float(value)
        if "stop" in raw:
            value = raw["stop"]
            stops = [value] if isinstance(value, str) else value
            if not isinstance(stops, (list, tuple)) or not all(isinstance(s, str) and s for s in stops):
                raise self.fail(f"{path}.stop", "must be a non-empty string or a list of "
                                f"non-empty strings, got {value!r}", stage)
            kwargs["stop"] = tuple(stops)
        if raw.get("seed") is not None:
            value = raw["seed"]
            if not is_int(value) or value < 0:
                raise self.fail(f"{path}.seed", f"must be an integer >= 0 or null, got {value!r}",
                                stage)
            kwargs["seed"] = value
        return SamplingParams(**kwargs)

    def _edges(self, raw: Any, path: str, stage: str, names: list[str]) -> tuple[Edge, ...]:
        if raw is None:
            return ()
        if isinstance(raw, str):
            raw = [{"goto": raw}]
        if not isinstance(raw, list):
            raise self.fail(path, "must be a stage name or a list of {when, goto}", stage)
        return tuple(self._edge(e, f"{path}[{i}]", stage, names) for i, e in enumerate(raw))

    def _edge(self, raw: Any, path: str, stage: str, names: list[str]) -> Edge:
        if isinstance(raw, str):
            raw = {"goto": raw}
        if not isinstance(raw, dict):
            raise self.fail(path, "an edge must be a mapping {when, goto, max_traversals}", stage)
        self.check_keys(raw, EDGE_KEYS, path, "an edge", stage)
        target = raw.get("goto")
        if target != END and target not in names:
            raise self.fail(f"{path}.goto", f"unknown stage {target!r}; known: "
                            f"{', '.join(names)} or {END}", stage)
        when = raw.get("when")
        if isinstance(when, str):
            when = [when]
        if when is not None and (not isinstance(when, list) or not all(
                isinstance(w, str) and w for w in when)):
            raise self.fail(f"{path}.when", "must be an outcome label or a list of labels", stage)
        budget = raw.get("max_traversals")
        if budget is not None and (not is_int(budget) or budget < 0):
            raise self.fail(f"{path}.max_traversals", f"must be an integer >= 0, got {budget!r}",
                            stage)
        return Edge(stage, target, None if when is None else frozenset(when), budget)

    def _check_reachable(self, stages: dict[str, Stage], entry: str, names: list[str]) -> None:
        seen, todo = {entry}, [entry]
        while todo:
            for edge in stages[todo.pop()].edges:
                if edge.target != END and edge.target not in seen:
                    seen.add(edge.target)
                    todo.append(edge.target)
        for i, name in enumerate(names):
            if name not in seen:
                raise self.fail(f"stages[{i}]", f"unreachable from the entry stage {entry!r}", name)

    def _check_loops(self, stages: dict[str, Stage], names: list[str]) -> None:
        """Every cycle must pass through an edge with ``max_traversals``."""
        state: dict[str, int] = {}

        def visit(node: str, stack: list[str]) -> None:
            state[node] = 1
            for edge in stages[node].edges:
                if edge.target == END or edge.max_traversals is not None:
                    continue
                if state.get(edge.target) == 1:
                    cycle = stack[stack.index(edge.target):] + [edge.target]
                    i = names.index(node)
                    raise self.fail(f"stages[{i}].next", "loop without a retry budget: "
                                    f"{' -> '.join(cycle)}; set max_traversals on one of "
                                    "its edges", node)
                if edge.target not in state:
                    visit(edge.target, stack + [edge.target])
            state[node] = 2

        for name in names:
            if name not in state:
                visit(name, [name])

    def _check_templates(self, stages: dict[str, Stage], inputs: tuple[str, ...],
                         entry: str) -> None:
        """Every template parses, names an input or a stage output, and has a value
        whenever its stage runs: on every path from the entry to the stage, an earlier
        stage sets each context name it reads (``_unset_path``)."""
        known = set(inputs) | set(stages) | {s.output_as for s in stages.values() if s.output_as}
        for i, stage in enumerate(stages.values()):
            sources = list(_template_leaves(stage.args, "args"))
            if stage.llm:
                sources += [("llm.system", stage.llm.system), ("llm.user", stage.llm.user)]
            for field_name, text in sources:
                path = f"stages[{i}].{field_name}"
                problem = template_problem(text)
                if problem:
                    raise self.fail(path, f"malformed template: {problem}", stage.name)
                for var in TEMPLATE_VAR.findall(text):
                    root = var.split(".")[0]
                    if root not in known:
                        raise self.fail(path, f"template input {{{{ {var} }}}} is not a workflow "
                                        f"input or stage output (inputs: "
                                        f"{', '.join(inputs) or 'none'})", stage.name)
                    if root in inputs:
                        continue
                    unset = _unset_path(stages, entry, stage.name, root)
                    if unset is not None:
                        setters = [s.name for s in stages.values() if _sets(s, root)]
                        raise self.fail(path, f"template input {{{{ {var} }}}} may have no value "
                                        f"yet: no stage that sets {root!r} "
                                        f"({', '.join(setters)}) has run before this one on the "
                                        f"path {' -> '.join(['start', *unset])}", stage.name)


def _template_leaves(value: Any, path: str) -> list[tuple[str, str]]:
    """(field path, text) of every string inside a (nested) template value."""
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _template_leaves(v, f"{path}.{k}")]
    if isinstance(value, (list, tuple)):
        return [leaf for i, v in enumerate(value) for leaf in _template_leaves(v, f"{path}[{i}]")]
    return []


def _sets(stage: Stage, name: str) -> bool:
    """Whether finishing ``stage`` puts ``name`` in the run context (with any outcome)."""
    return stage.name == name or stage.output_as == name


def _unset_path(stages: dict[str, Stage], entry: str, target: str, name: str
                ) -> list[str] | None:
    """A path of stages from the entry to ``target`` on which no stage before ``target``
    sets ``name`` (so a template of ``target`` reading it fails there), or None.

    Follows every edge, whatever its outcome labels: an edge the graph has may be taken.
    """
    before: dict[str, str | None] = {entry: None}
    todo = deque([entry])
    while todo:
        node = todo.popleft()
        if node == target:
            path = [node]
            while (prev := before[path[-1]]) is not None:
                path.append(prev)
            return path[::-1]
        if _sets(stages[node], name):
            continue
        for edge in stages[node].edges:
            if edge.target != END and edge.target not in before:
                before[edge.target] = node
                todo.append(edge.target)
    return None

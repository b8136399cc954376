from __future__ import annotations

import copy

import pytest
import yaml

from cortex.workflow import END, WorkflowBuilder, WorkflowError, load_workflow
from tests.factories import compile_spec, tool_exists

BASE = {
    "name": "wf",
    "inputs": ["q"],
    "stages": [
        {"name": "gen", "llm": {"user": "{{ q }}", "max_tokens": 8}, "output_as": "ans",
         "next": "check"},
        {"name": "check", "tool": "t.check", "args": {"a": "{{ ans.text }}"},
         "next": [{"when": "ok", "goto": END},
                  {"when": ["error", "empty"], "goto": "fix", "max_traversals": 2}]},
        {"name": "fix", "llm": {"user": "fix {{ ans.text }}"}, "output_as": "ans",
         "next": "check"},
    ],
}


def spec_with(**changes):
    spec = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = spec
        keys = path.split("__")
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node[key]
        last = keys[-1]
        node[int(last) if last.isdigit() else last] = value
    return spec


def error_of(spec, source="wf.yaml") -> WorkflowError:
    with pytest.raises(WorkflowError) as info:
        compile_spec(spec, source)
    return info.value


def test_valid_spec_compiles():
    wf = compile_spec(BASE)
    assert wf.entry == "gen" and wf.llm_stages == ["gen", "fix"]
    assert wf.stages["check"].edges[1].max_traversals == 2


def test_builder_and_yaml_compile_to_same_graph(tmp_path):
    b = WorkflowBuilder("wf", inputs=["q"])
    b.llm("gen", user="{{ q }}", max_tokens=8, output_as="ans").then("check")
    b.tool("check", "t.check", args={"a": "{{ ans.text }}"}).end("ok").on(
        ["error", "empty"], "fix", max_traversals=2)
    b.llm("fix", user="fix {{ ans.text }}", output_as="ans").then("check")
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(BASE))
    from_yaml = load_workflow(path, tool_exists=tool_exists)
    from_builder = b.compile(tool_exists=tool_exists)
    assert from_yaml.stages == from_builder.stages
    assert from_yaml.inputs == from_builder.inputs


def test_unknown_stage_names_field_and_stage():
    err = error_of(spec_with(stages__0__next="nope"))
    assert "wf.yaml" in str(err) and "stages[0].next[0].goto" in str(err)
    assert "'gen'" in str(err) and "unknown stage 'nope'" in str(err)


def test_unknown_tool():
    err = error_of(spec_with(stages__1__tool="sql.nope"))
    assert "stages[1].tool" in str(err) and "unknown tool 'sql.nope'" in str(err)
    assert err.stage == "check"


def test_loop_without_budget():
    spec = spec_with()
    del spec["stages"][1]["next"][1]["max_traversals"]
    err = error_of(spec)
    assert "loop without a retry budget" in str(err)
    assert "check -> fix -> check" in str(err) or "fix -> check -> fix" in str(err)


def test_unreachable_stage():
    spec = spec_with()
    spec["stages"].append({"name": "orphan", "tool": "t.echo"})
    err = error_of(spec)
    assert "stages[3]" in str(err) and "unreachable" in str(err) and err.stage == "orphan"


def test_missing_template_input():
    err = error_of(spec_with(stages__0__llm={"user": "{{ question }}"}))
    assert "stages[0].llm.user" in str(err) and "question" in str(err)


def test_duplicate_names():
    spec = spec_with()
    spec["stages"][2]["name"] = "gen"
    err = error_of(spec)
    assert "stages[2].name" in str(err) and "duplicate" in str(err)


@pytest.mark.parametrize("change, where", [
    ({"stages__0__fanout": 0}, "stages[0].fanout"),
    ({"stages__0__join": "any"}, "stages[0].join"),
    ({"stages__1__next__1__max_traversals": -1}, "stages[1].next[1].max_traversals"),
    ({"stages__0__llm": {"user": "{{ q }}", "max_tokens": 0}}, "stages[0].llm.max_tokens"),
    ({"output": "nowhere"}, "output"),
])
def test_field_errors(change, where):
    assert where in str(error_of(spec_with(**change)))


def test_stage_needs_one_kind():
    spec = spec_with()
    spec["stages"][1]["llm"] = {"user": "x"}
    assert "exactly one of 'llm' or 'tool'" in str(error_of(spec))


def test_bad_yaml_names_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed")
    with pytest.raises(WorkflowError, match="broken.yaml: invalid YAML"):
        load_workflow(path, tool_exists=tool_exists)

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


def llm_with(**fields):
    """BASE with ``fields`` added to the entry stage's llm section."""
    return spec_with(stages__0__llm={"user": "{{ q }}", **fields})


@pytest.mark.parametrize("fields, where, says", [
    ({"stop": 5}, "stages[0].llm.stop", "string or a list of non-empty strings, got 5"),
    ({"stop": [";", 7]}, "stages[0].llm.stop", "got [';', 7]"),
    ({"stop": ""}, "stages[0].llm.stop", "non-empty"),
    ({"stop": {"a": 1}}, "stages[0].llm.stop", "string or a list"),
    ({"temperature": "hot"}, "stages[0].llm.temperature", "number from 0 to 2, got 'hot'"),
    ({"temperature": True}, "stages[0].llm.temperature", "got True"),
    ({"temperature": 2.5}, "stages[0].llm.temperature", "from 0 to 2"),
    ({"temperature": -0.1}, "stages[0].llm.temperature", "from 0 to 2"),
    ({"temperature": float("nan")}, "stages[0].llm.temperature", "from 0 to 2"),
    ({"max_tokens": True}, "stages[0].llm.max_tokens", "integer >= 1, got True"),
    ({"max_tokens": 8.5}, "stages[0].llm.max_tokens", "integer >= 1"),
    ({"max_tokens": "8"}, "stages[0].llm.max_tokens", "integer >= 1"),
    ({"top_p": 0}, "stages[0].llm.top_p", "above 0 and at most 1"),
    ({"top_p": "1"}, "stages[0].llm.top_p", "above 0 and at most 1"),
    ({"top_p": False}, "stages[0].llm.top_p", "got False"),
    ({"seed": "7"}, "stages[0].llm.seed", "integer >= 0 or null"),
    ({"seed": True}, "stages[0].llm.seed", "got True"),
    ({"seed": -1}, "stages[0].llm.seed", "integer >= 0"),
    ({"model": 3}, "stages[0].llm.model", "model name or null"),
])
def test_sampling_fields_are_checked_for_type_and_range(fields, where, says):
    err = error_of(llm_with(**fields))
    assert err.source == "wf.yaml" and err.path == where and err.stage == "gen"
    assert says in str(err)


def test_sampling_fields_within_range_compile():
    params = compile_spec(llm_with(max_tokens=4, temperature=2, top_p=0.5, stop=[";", "\n\n"],
                                   seed=0)).stages["gen"].llm.params
    assert (params.max_tokens, params.temperature, params.top_p) == (4, 2.0, 0.5)
    assert params.stop == (";", "\n\n") and params.seed == 0
    assert compile_spec(llm_with(seed=None)).stages["gen"].llm.params.seed is None


def test_a_stop_string_is_one_stop_sequence():
    """``stop: "\\n\\n"`` was split into its characters (two single newlines)."""
    assert compile_spec(llm_with(stop="\n\n")).stages["gen"].llm.params.stop == ("\n\n",)
    assert compile_spec(llm_with(stop="END")).stages["gen"].llm.params.stop == ("END",)


@pytest.mark.parametrize("change, where", [
    ({"stages__1__next__1__max_traversals": True}, "stages[1].next[1].max_traversals"),
    ({"stages__0__expected_service_ms": True}, "stages[0].expected_service_ms"),
    ({"slo_ms": True}, "slo_ms"),
    ({"slo_ms": float("inf")}, "slo_ms"),
])
def test_yaml_booleans_are_not_numbers(change, where):
    assert error_of(spec_with(**change)).path == where


def test_unknown_stage_key_lists_the_known_keys():
    err = error_of(spec_with(stages__1__bogus_key=1))
    assert err.path == "stages[1].bogus_key" and err.stage == "check"
    assert "unknown key 'bogus_key' in a stage; known: name, tool, args, llm, next" in str(err)


@pytest.mark.parametrize("change, where, known", [
    ({"stages__0__llm__max_token": 8}, "stages[0].llm.max_token", "max_tokens, temperature"),
    ({"stages__1__next__1__max_traversal": 2}, "stages[1].next[1].max_traversal",
     "when, goto, max_traversals"),
    ({"ouput": "check"}, "ouput", "inputs, output, slo_ms"),
])
def test_unknown_keys_in_llm_edges_and_workflow(change, where, known):
    err = error_of(spec_with(**change))
    assert err.path == where and "unknown key" in str(err) and known in str(err)


def test_args_on_an_llm_stage_are_refused():
    """They were silently ignored: an llm stage renders llm.system and llm.user only."""
    err = error_of(spec_with(stages__0__args={"a": "{{ q }}"}))
    assert err.path == "stages[0].args" and err.stage == "gen"


def test_duplicate_inputs():
    err = error_of(spec_with(inputs=["q", "q"]))
    assert err.path == "inputs[1]" and "duplicate input name 'q'" in str(err)
    assert "wf.yaml: inputs[1]: duplicate" in str(err)


@pytest.mark.parametrize("change, where", [
    ({"stages__0__llm": {"user": "{{ q }"}}, "stages[0].llm.user"),
    ({"stages__0__llm": {"user": "{{ q }}", "system": "{{ q | upper }}"}}, "stages[0].llm.system"),
    ({"stages__1__args": {"a": "{{ ans.text }}", "b": ["x", "{{ ans..text }}"]}},
     "stages[1].args.b[1]"),
    ({"stages__2__llm": {"user": "fix {{ ans.text }} {{"}}, "stages[2].llm.user"),
])
def test_a_template_that_does_not_parse_names_the_field(change, where):
    err = error_of(spec_with(**change))
    assert err.path == where and "malformed template" in str(err)


def test_braces_that_are_not_placeholders_stay_text():
    spec = spec_with(stages__0__llm={"user": 'Reply as JSON {"a": {"b": 1}} to {{{ q }}}'})
    assert compile_spec(spec).stages["gen"].llm.user.startswith("Reply")


def test_entry_stage_cannot_read_a_later_stage():
    err = error_of(spec_with(stages__0__llm={"user": "{{ q }} {{ check.text }}"}))
    assert err.path == "stages[0].llm.user" and err.stage == "gen"
    assert "{{ check.text }} may have no value yet" in str(err)
    assert "path start -> gen" in str(err)


def test_a_stage_cannot_read_its_own_output_before_its_first_run():
    err = error_of(spec_with(stages__2__llm={"user": "again {{ fix.text }}"}))
    assert err.stage == "fix" and "path start -> gen -> check -> fix" in str(err)


def test_a_stage_cannot_read_a_stage_of_another_branch():
    """gen -> check -> (ok: a | error: b) -> c: c reading b fails on the path through a."""
    spec = {"name": "wf", "inputs": ["q"], "stages": [
        {"name": "gen", "llm": {"user": "{{ q }}"}, "next": "check"},
        {"name": "check", "tool": "t.check", "args": {"x": "{{ gen.text }}"},
         "next": [{"when": "ok", "goto": "a"}, {"when": "error", "goto": "b"}]},
        {"name": "a", "tool": "t.echo", "next": "c"},
        {"name": "b", "tool": "t.echo", "next": "c"},
        {"name": "c", "tool": "t.echo", "args": {"x": "{{ b }}"}},
    ]}
    err = error_of(spec)
    assert err.path == "stages[4].args.x" and err.stage == "c"
    assert "path start -> gen -> check -> a -> c" in str(err)
    spec["stages"][4]["args"] = {"x": "{{ check }}"}  # set on every path: fine
    assert compile_spec(spec).stages["c"].args == {"x": "{{ check }}"}


def test_a_retry_loop_reads_what_ran_before_on_every_path():
    """fix reads check (always ran before it) and the alias ans (set by gen, then by fix)."""
    spec = spec_with(stages__2__llm={"user": "fix {{ ans.text }}: {{ check.message }}"})
    assert compile_spec(spec).stages["fix"].llm.user.startswith("fix")


BRANCHES = {"name": "wf", "inputs": ["q"], "stages": [
    {"name": "route", "tool": "t.check", "args": {"q": "{{ q }}"},
     "next": [{"when": "ok", "goto": "short"}, {"when": "empty", "goto": "long"}]},
    {"name": "short", "llm": {"user": "briefly: {{ q }}"}},
    {"name": "long", "llm": {"user": "at length: {{ q }}"}, "next": "$end"},
]}


def test_output_defaults_to_the_only_stage_a_run_can_end_at():
    """Without output the run's answer was null (the chat endpoint answered "null")."""
    spec = spec_with()
    assert "output" not in spec
    assert compile_spec(spec).output == "check"
    chain = {"name": "c", "inputs": ["q"], "stages": [
        {"name": "draft", "llm": {"user": "{{ q }}"}, "next": "answer"},
        {"name": "answer", "llm": {"user": "{{ draft.text }}"}}]}
    assert compile_spec(chain).output == "answer"


@pytest.mark.parametrize("outcome, stage", [("ok", "short"), ("empty", "long")])
def test_without_output_a_run_answers_with_the_stage_it_ended_at(outcome, stage):
    from cortex.core import RunStatus
    from tests.factories import orchestrator, result

    wf = compile_spec(BRANCHES)
    assert wf.output is None  # two stages can end a run
    orch = orchestrator(wf)
    run, step = orch.admit("wf", {"q": "hi"}, now=0.0)
    (answer,) = orch.complete(step.calls[0], result(outcome), 1.0).calls
    assert answer.stage.name == stage
    orch.complete(answer, result(text=f"{stage} answer"), 2.0)
    assert run.status is RunStatus.SUCCEEDED and run.output == {"text": f"{stage} answer"}


def test_declared_output_must_have_run_whenever_a_run_succeeds():
    err = error_of(dict(BRANCHES, output="short"))
    assert err.path == "output" and "'short' may not have run when a run ends at stage " \
        "'long' (path start -> route -> long -> $end)" in str(err)
    assert compile_spec(dict(BRANCHES, output="route")).output == "route"


@pytest.mark.parametrize("output", [["check"], {"stage": "check"}, 3])
def test_output_must_be_a_stage_name(output):
    assert error_of(spec_with(output=output)).path == "output"


UAT_WORKFLOW = """\
name: uat
inputs: [q]
stages:
  - name: a
    llm: {user: "{{ q }}"}
    next: b
  - name: b
    llm: {user: "{{ a.text }}"}
"""


@pytest.mark.parametrize("old, new, where", [
    ('llm: {user: "{{ q }}"}', 'llm: {user: "{{ q }}", stop: 5}', "stages[0].llm.stop"),
    ('llm: {user: "{{ q }}"}', 'llm: {user: "{{ q }}", temperature: "hot"}',
     "stages[0].llm.temperature"),
    ('llm: {user: "{{ q }}"}', 'llm: {user: "{{ q }}", max_tokens: true}',
     "stages[0].llm.max_tokens"),
    ('llm: {user: "{{ q }}"}', 'llm: {user: "{{ q }"}', "stages[0].llm.user"),
    ("    next: b", "    next: b\n    bogus_key: 1", "stages[0].bogus_key"),
    ("inputs: [q]", "inputs: [q, q]", "inputs[1]"),
    ('llm: {user: "{{ q }}"}', 'llm: {user: "{{ b.text }}"}', "stages[0].llm.user"),
])
def test_acceptance_cases_from_a_yaml_file(tmp_path, old, new, where):
    path = tmp_path / "uat.yaml"
    assert load_workflow(_write(path, UAT_WORKFLOW), tool_exists=tool_exists).output == "b"
    with pytest.raises(WorkflowError) as info:
        load_workflow(_write(path, UAT_WORKFLOW.replace(old, new, 1)), tool_exists=tool_exists)
    assert str(info.value).startswith(f"{path}: {where}")
    assert info.value.stage in ("a", None)


def _write(path, text):
    path.write_text(text)
    return path

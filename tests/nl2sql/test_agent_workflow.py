"""The NL2SQL agent workflow on real SQLite with real tools; the LLM replies are
scripted (the workflow must behave correctly whatever the model says)."""
from __future__ import annotations

import hashlib

import pytest

from cortex.core import CallResult, Completion, RunStatus, Usage
from cortex.nl2sql.datasets import ensure_databases
from cortex.nl2sql.workflow import load_agent
from cortex.orchestrator.orchestrator import Orchestrator
from cortex.orchestrator.outputs import llm_result
from cortex.tools import TOOLS, load_builtin_tools

GOOD = "SELECT COUNT(*) FROM employees;"


def drive(replies: list[str], question: str = "How many employees?", budget: int | None = None):
    """Run the agent to the end: tools for real, LLM calls answered from ``replies``."""
    load_builtin_tools()
    wf = load_agent(budget)
    orch = Orchestrator({wf.name: wf})
    run, step = orch.admit("nl2sql", {"question": question, "db": "hr"}, 0.0, slo_s=60)
    pending, now, prompts = list(step.calls), 0.0, []
    while pending:
        call = pending.pop(0)
        now += 0.1
        if call.stage.is_llm:
            prompts.append(call.args)
            text = replies.pop(0)
            result = llm_result(call.stage, Completion(call.call_id, text, Usage(), "e0"))
        else:
            out = TOOLS.get(call.stage.tool)(call.args)
            result = CallResult(out.outcome, out.output)
        pending.extend(orch.complete(call, result, now).calls)
    return run, prompts


def stages(run):
    return [(t.stage, t.outcome) for t in run.trace]


def test_first_try_success_returns_sql_and_rows():
    run, prompts = drive([GOOD])
    assert run.status is RunStatus.SUCCEEDED
    assert run.output["sql"] == "SELECT COUNT(*) FROM employees"
    assert run.output["rows"][0][0] > 0
    assert stages(run) == [("schema", "ok"), ("generate", "ok"), ("execute", "ok"),
                           ("verify", "ok")]
    assert "CREATE TABLE employees" in prompts[0]["system"]


def test_error_goes_to_fixer_with_the_error_text():
    run, prompts = drive(["SELECT nope FROM employees", GOOD])
    assert run.status is RunStatus.SUCCEEDED
    assert [s for s, _ in stages(run)].count("fix") == 1
    fix_prompt = prompts[1]["user"]
    assert "SELECT nope FROM employees" in fix_prompt and "no such column" in fix_prompt


def test_empty_result_is_labelled_and_fixed():
    run, _ = drive(["SELECT * FROM employees WHERE 1 = 0", GOOD])
    assert ("verify", "empty") in stages(run) and run.status is RunStatus.SUCCEEDED


def test_prose_reply_is_an_error_not_a_crash():
    run, _ = drive(["I think you should count them.", GOOD])
    assert ("execute", "error") in stages(run) and run.status is RunStatus.SUCCEEDED


def test_budget_exhausted_after_three_fixes():
    run, _ = drive(["SELECT nope"] * 4)
    assert run.status is RunStatus.FAILED
    assert "retry budget exhausted: verify->fix taken 3 times" in run.reason
    assert [s for s, _ in stages(run)].count("fix") == 3


def test_budget_is_configurable():
    run, _ = drive(["SELECT nope"] * 2, budget=1)
    assert run.status is RunStatus.FAILED and [s for s, _ in stages(run)].count("fix") == 1


def test_hostile_sql_is_refused_and_database_untouched():
    path = ensure_databases()["hr"]
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    run, prompts = drive(["DROP TABLE employees;", "DELETE FROM employees;", GOOD])
    assert run.status is RunStatus.SUCCEEDED
    assert "Only a single SELECT" in prompts[1]["user"] or "read" in prompts[1]["user"].lower()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CORTEX_CACHE_DIR", str(tmp_path))

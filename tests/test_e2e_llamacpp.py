"""End to end on real llama.cpp engines: the NL2SQL agent under each policy."""
from __future__ import annotations

import json

import pytest

from cortex.cli import main

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("policy", ["shared-fcfs", "shared-prefix", "cortex"])
def test_cortex_run_nl2sql_on_real_engines(policy, capsys):
    code = main(["run", "nl2sql", "How many employees are there?", "--db", "hr",
                 "--policy", policy, "--engines", "2", "--json"])
    run = json.loads(capsys.readouterr().out)
    assert code == (0 if run["status"] == "succeeded" else 1)
    assert run["status"] in ("succeeded", "failed")   # a 135M model may fail; never crash
    stages = [t["stage"] for t in run["trace"]]
    assert stages[:4] == ["schema", "generate", "execute", "verify"]
    llm = [t for t in run["trace"] if t["stage"] in ("generate", "fix")]
    assert all(t["engine"].startswith("llamacpp-") for t in llm)
    assert all(t["prompt_tokens"] > 300 and t["output_tokens"] >= 1 for t in llm)
    if policy == "cortex":
        assert {t["engine"] for t in llm if t["stage"] == "generate"}.isdisjoint(
            {t["engine"] for t in llm if t["stage"] == "fix"})
    if run["status"] == "succeeded":
        assert run["output"]["sql"].upper().startswith(("SELECT", "WITH"))


async def test_a_model_knob_sends_a_late_runs_calls_to_gemma(tmp_path):
    # A run that is late from the start (tiny SLO, generous timeout) turns its cheapest
    # knob at once: its generate call names gemma3-270m and runs on the engine's
    # Gemma context, and the run's record says which knob was turned.
    from importlib.resources import files

    from cortex.config import parse_config
    from cortex.runtime.build import build_runtime

    agent = (files("cortex.nl2sql") / "agent.yaml").read_text()
    workflow = tmp_path / "agent.yaml"
    workflow.write_text(agent + "\nknobs:\n  - {name: light-sql, stage: generate, "
                        "model: gemma3-270m, cost: 0.1}\n")
    cfg = parse_config({"policy": "shared-fcfs", "workflows": [str(workflow)],
                        "engines": [{"backend": "llamacpp", "count": 1, "cache_mb": 64,
                                     "extra_models": ["gemma3-270m"]}]})
    runtime = await build_runtime(cfg)
    try:
        run = runtime.submit("nl2sql", {"question": "How many employees are there?",
                                        "db": "hr"}, slo_s=0.01, timeout_s=300)
        run = await runtime.wait(run.run_id)
        engine = next(iter(runtime.engines.values()))
        stats = engine.stats().per_model
    finally:
        await runtime.close()
    assert run.status.value in ("succeeded", "failed")
    turned = run.to_dict()["knobs_turned"]
    assert [t["knob"] for t in turned] == ["light-sql"] and turned[0]["slack_s"] < 0
    assert stats["gemma3-270m"].num_calls >= 1                 # generate ran on Gemma
    generate = [t for t in run.trace if t.stage == "generate"]
    assert generate and generate[0].usage.prompt_tokens > 300

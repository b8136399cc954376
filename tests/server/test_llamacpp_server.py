"""The server on real llama.cpp engines (SmolLM2-135M from PyPI): the OpenAI client,
streaming, the NL2SQL workflow with SSE, and honest prefix-cache figures."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import yaml

from cortex.client import CortexClient
from cortex.server.serve import CortexServer
from tests.server.helpers import (
    ARTIFACTS,
    CHROMIUM_SKIP_REASON,
    chromium,
    dom_cell,
    running_server,
)

pytestmark = pytest.mark.slow
pytest.importorskip("cortex.engine.llamacpp", reason="cortex.engine.llamacpp is not built yet")

SYSTEM = ("You are an expert SQLite analyst. Write one SQLite SELECT query that answers the "
          "question. Use only the tables and columns in the schema.\n"
          "CREATE TABLE orders (id INTEGER PRIMARY KEY, region TEXT, amount REAL, day TEXT);\n"
          "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, region TEXT);\n") * 3


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CortexServer]:
    path: Path = tmp_path_factory.mktemp("llama") / "cortex.yaml"
    path.write_text(yaml.safe_dump({
        "policy": "cortex", "workflows": ["nl2sql"],
        "engines": [{"backend": "llamacpp", "count": 2, "cache_mb": 64}],
        "server": {"host": "127.0.0.1", "port": 0}}))
    with running_server(path) as server:
        yield server


def test_pool_chat_reuses_the_prefix_cache(llama_server: CortexServer) -> None:
    client = openai.OpenAI(base_url=f"{llama_server.url}/v1", api_key="x", max_retries=0)
    replies = [client.chat.completions.create(
        model="generate", max_tokens=8, temperature=0,
        messages=[{"role": "system", "content": SYSTEM},
                  {"role": "user", "content": f"Question: {q}\nSQL:"}])
        for q in ("How many orders are there?", "What is the total amount in Europe?")]
    assert all(r.choices[0].message.content for r in replies)
    first, second = (r.usage for r in replies)
    assert second.prompt_tokens > 100 and second.completion_tokens <= 8
    assert second.prompt_tokens_details.cached_tokens > first.prompt_tokens_details.cached_tokens
    assert second.prompt_tokens_details.cached_tokens >= 0.5 * second.prompt_tokens


def test_streaming_chat_on_a_real_engine(llama_server: CortexServer) -> None:
    client = openai.OpenAI(base_url=f"{llama_server.url}/v1", api_key="x", max_retries=0)
    stream = client.chat.completions.create(
        model="fix", max_tokens=8, stream=True,
        messages=[{"role": "user", "content": "Fix: SELEC 1;"}])
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    completion = client.completions.create(model="generate", prompt="SELECT", max_tokens=4)
    assert completion.usage.completion_tokens <= 4 and completion.usage.prompt_tokens > 0


def test_nl2sql_run_with_events(llama_server: CortexServer) -> None:
    with CortexClient(llama_server.url) as client:
        run_id = client.run("nl2sql", {"question": "How many customers are there?",
                                       "db": "sales"}, slo_ms=60000, timeout_ms=12000)["run_id"]
        events = list(client.events(run_id))
        final = events[-1]
        assert final["type"] == "run_finished" and final["status"] in (
            "succeeded", "failed", "timed_out")
        llm_calls = [e for e in events if e["type"] == "call_finished"
                     and e["stage"] in ("generate", "fix")]
        assert llm_calls and all(e["engine"].startswith("llamacpp-") for e in llm_calls)
        assert all(e["prompt_tokens"] > 0 and e["cached_prompt_tokens"] is not None
                   for e in llm_calls)
        assert events[1]["type"] == "call_queued" and events[1]["stage"] == "schema"
        metrics = client.metrics()
        assert 'cortex_stage_calls_total{outcome="ok",pool="generate",stage="generate"}' \
            in metrics


@pytest.mark.skipif(bool(CHROMIUM_SKIP_REASON), reason=CHROMIUM_SKIP_REASON or "-")
def test_dashboard_with_real_engines(llama_server: CortexServer, tmp_path: Path) -> None:
    """Runs after the tests above: the page shows the real engines' prefix hit rate."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard-llamacpp.png"
    dom = chromium(f"{llama_server.url}/", tmp_path / "dom", "--dump-dom").stdout
    chromium(f"{llama_server.url}/", tmp_path / "shot", f"--screenshot={shot}")
    assert "llamacpp-" in dom and '<tr data-pool="generate">' in dom
    hit_rate = dom_cell(dom, 'data-pool="generate"', "hit-rate")
    assert hit_rate.endswith("%") and float(hit_rate.split()[0]) > 0
    assert shot.exists()

"""A run that fails on the request's own content is the client's mistake: the OpenAI
endpoints answer 400 with a reason (OpenAI's `context_length_exceeded` for a prompt
that does not fit), not 502; real engine and server failures stay 502."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from types import SimpleNamespace

import httpx
import openai
import pytest

from cortex.core import Completion, EngineRequest, ToolResult
from cortex.engine.base import ContextLengthExceeded, EngineError
from cortex.engine.null import NullConfig, NullEngine
from cortex.server.serve import CortexServer
from cortex.tools import TOOLS
from tests.server.helpers import CHAIN, running_server, write_config

N_CTX = 8000
RAISING_TOOL = "test.raises"
if RAISING_TOOL not in TOOLS:
    def _raises(args: dict) -> ToolResult:
        raise RuntimeError("tool bug")
    TOOLS.add(RAISING_TOOL, _raises)
BUGGY = {"name": "buggy", "inputs": ["question"], "output": "calc",
         "stages": [{"name": "calc", "tool": RAISING_TOOL, "args": {"q": "{{ question }}"}}]}


class SmallContextEngine(NullEngine):
    """A null engine with a context window of N_CTX tokens, as llama.cpp reports it;
    a prompt containing CRASH fails the engine itself."""

    async def generate(self, request: EngineRequest) -> Completion:
        tokens = len(request.prompt_tokens) or len(self.tokenize(request))
        if tokens >= N_CTX:
            self.num_calls += 1
            raise ContextLengthExceeded(f"engine {self.engine_id}: prompt of {tokens} tokens "
                                        f"does not fit n_ctx={N_CTX}; raise n_ctx or shorten "
                                        "it", tokens, N_CTX)
        if "CRASH" in (request.prompt or str(request.messages)):
            self.num_calls += 1
            raise EngineError(f"engine {self.engine_id}: the backend crashed")
        return await super().generate(request)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CortexServer]:
    tmp = tmp_path_factory.mktemp("faults")
    path = write_config(tmp, workflows=[CHAIN, BUGGY])
    path.write_text(path.read_text().replace("- chain.yaml", "- chain.yaml\n- nl2sql"))
    engines = {f"small-{i}": SmallContextEngine(f"small-{i}", NullConfig(text="SELECT 1;"))
               for i in range(8)}
    with running_server(path, engines=engines) as server:
        yield server


@pytest.fixture()
def client(server: CortexServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)


def _engines(server: CortexServer, pool: str) -> list[SmallContextEngine]:
    controller = server.service.runtime.controller
    return [server.service.runtime.engines[e] for e in controller.pools[pool].engine_ids]


def _all_healthy(server: CortexServer) -> bool:
    pools = httpx.get(f"{server.url}/v1/pools").json()["pools"]
    return all(e["healthy"] for p in pools for e in p["engines"])


def test_a_prompt_longer_than_the_context_is_400_context_length_exceeded(
        server: CortexServer, client: openai.OpenAI) -> None:
    engines = _engines(server, "draft")
    assert len(engines) >= 2
    calls = sum(e.num_calls for e in engines)
    long = [{"role": "user", "content": "x" * 9000}]
    with pytest.raises(openai.BadRequestError) as chat:
        client.chat.completions.create(model="draft", messages=long)
    error = chat.value.body
    assert chat.value.status_code == 400 and error["code"] == "context_length_exceeded"
    assert error["param"] == "messages" and "does not fit n_ctx=8000" in error["message"]
    assert chat.value.response.json()["error"]["type"] == "invalid_request_error"
    # the request's fault, not the engine's: not retried elsewhere, every engine healthy
    assert sum(e.num_calls for e in engines) == calls + 1 and _all_healthy(server)
    with pytest.raises(openai.BadRequestError) as completion:
        client.completions.create(model="draft", prompt="x" * 9000)
    assert completion.value.body["code"] == "context_length_exceeded"
    assert completion.value.body["param"] == "prompt"
    with pytest.raises(openai.BadRequestError) as workflow:  # a workflow's stage prompt
        client.chat.completions.create(model="chain", messages=long)
    assert workflow.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.APIError) as streamed:
        list(client.chat.completions.create(model="draft", messages=long, stream=True))
    assert streamed.value.body["code"] == "context_length_exceeded"
    assert _all_healthy(server)
    run_id = error["message"].split()[1]
    run = httpx.get(f"{server.url}/v1/runs/{run_id}").json()
    assert run["status"] == "failed" and run["trace"][0]["outcome"] == "error"


def test_the_call_event_carries_the_error_code(server: CortexServer) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        run = http.post("/v1/runs", json={"workflow": "chain", "wait": True,
                                          "inputs": {"question": "x" * 9000}}).json()
        assert run["status"] == "failed" and "does not fit" in run["reason"]
        with http.stream("GET", f"/v1/runs/{run['run_id']}/events") as stream:
            text = "".join(stream.iter_text())
    assert '"error_code":"context_length_exceeded"' in text


def test_an_input_a_tool_refuses_is_400_naming_it(client: openai.OpenAI) -> None:
    question = [{"role": "user", "content": "How many customers?"}]
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="nl2sql", messages=question,
                                       extra_body={"inputs": {"db": "nope"}})
    error = bad.value.body
    assert error["code"] == "invalid_input" and error["param"] == "inputs.db"
    assert "database 'nope' is not served here" in error["message"]
    with pytest.raises(openai.APIError) as streamed:  # the stream had begun: 200
        list(client.chat.completions.create(model="nl2sql", messages=question, stream=True,
                                            extra_body={"inputs": {"db": "nope"}}))
    assert streamed.value.body["code"] == "invalid_input"
    reply = client.chat.completions.create(model="nl2sql", messages=question,
                                           extra_body={"inputs": {"db": "sales"}})
    assert reply.model_extra["cortex"]["status"] == "succeeded"


def test_server_failures_stay_502(server: CortexServer, client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as raised:  # a tool that raised: a bug
        client.chat.completions.create(model="buggy", messages=[{"role": "user", "content": "q"}])
    assert raised.value.status_code == 502 and raised.value.body["code"] == "run_failed"
    assert "raised RuntimeError: tool bug" in raised.value.message
    with pytest.raises(openai.InternalServerError) as crashed:  # the engine failed
        client.chat.completions.create(model="answer",
                                       messages=[{"role": "user", "content": "CRASH"}])
    assert crashed.value.status_code == 502 and "backend crashed" in crashed.value.message


def test_a_tool_error_after_an_llm_stage_is_not_blamed_on_the_request() -> None:
    from cortex.core import ERROR, TraceEntry, Usage
    from cortex.server.routes_openai import request_fault
    from cortex.workflow import WorkflowBuilder

    wf = WorkflowBuilder("w", inputs=["q"], output="run")
    wf.llm("gen", user="{{ q }}").then("run")
    wf.tool("run", "sql.execute", args={"sql": "{{ gen.text }}"})
    compiled = wf.compile()

    trace = [TraceEntry("c0", "gen", 1, "e", "gen", "ok", 0, 0, 1, Usage()),
             TraceEntry("c1", "run", 1, "", "tools", ERROR, 1, 1, 2, Usage(),
                        "database 'nope' is not served here")]
    run = SimpleNamespace(run_id="r", workflow=compiled, inputs={"q": "nope"}, trace=trace,
                          reason="stage 'run' failed: database 'nope' is not served here")
    assert request_fault(run, None, "messages") is None  # type: ignore[arg-type]
    run.trace = trace[1:]  # no LLM stage before: the tool saw the inputs alone
    fault = request_fault(run, None, "messages")  # type: ignore[arg-type]
    assert fault is not None and fault.param == "inputs.q" and fault.status == 400


def test_llamacpp_reports_a_prompt_that_does_not_fit_as_the_request_s_fault() -> None:
    llamacpp = pytest.importorskip("cortex.engine.llamacpp")
    from cortex.engine.base import EngineRequestError

    engine = llamacpp.LlamaCppEngine("e", llamacpp.LlamaCppConfig(n_ctx=64))
    with pytest.raises(ContextLengthExceeded, match="prompt of 64 tokens does not fit") as big:
        engine._check_fits(64)
    assert (big.value.num_tokens, big.value.n_ctx, big.value.code) == (64, 64,
                                                                       "context_length_exceeded")
    with pytest.raises(EngineRequestError, match="the prompt is empty"):
        engine._check_fits(0)
    engine._check_fits(63)


def test_an_engine_failure_is_in_the_event_stream(server: CortexServer) -> None:
    # Each engine of the pool crashes on this prompt: the call is retried once on another
    # engine (call_retried names the engine that failed), then fails (call_finished with
    # the error), so no call is left "started" in the events.
    with httpx.Client(base_url=server.url, timeout=10) as http:
        run = http.post("/v1/runs", json={"workflow": "chain", "wait": True,
                                          "inputs": {"question": "CRASH"}}).json()
        with http.stream("GET", f"/v1/runs/{run['run_id']}/events") as stream:
            events = [json.loads(line[5:]) for line in stream.iter_lines()
                      if line.startswith("data:")]
    assert run["status"] == "failed" and "backend crashed" in run["reason"]
    calls = [(e["type"], e.get("engine")) for e in events if e["type"].startswith("call_")]
    kinds = [k for k, _ in calls]
    assert kinds == ["call_queued", "call_started", "call_retried", "call_started",
                     "call_finished"], kinds
    first, second = calls[1][1], calls[3][1]
    assert calls[2][1] == first and calls[4][1] == second and first != second
    finished = events[kinds.index("call_finished") + 1]
    assert finished["outcome"] == "error" and "backend crashed" in finished["error"]
    for _ in range(200):  # the probes bring both engines back
        if _all_healthy(server):
            break
        time.sleep(0.02)
    assert _all_healthy(server)

"""Shared test factories (vLLM style: small builders, hand-made results)."""
from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx

from cortex.core import OK, CallResult, EngineRequest, Usage
from cortex.orchestrator.orchestrator import Orchestrator
from cortex.orchestrator.run import StageCall
from cortex.workflow import CompiledWorkflow, WorkflowBuilder, compile_workflow

TEST_TOOLS = {"t.echo", "t.check", "sql.schema", "sql.execute", "sql.verify"}


def tool_exists(name: str) -> bool:
    return name in TEST_TOOLS


def compile_spec(spec: dict[str, Any], source: str = "test.yaml") -> CompiledWorkflow:
    return compile_workflow(spec, source=source, tool_exists=tool_exists)


def loop_workflow(budget: int = 2, fanout: int = 1, join: str = "first_ok") -> CompiledWorkflow:
    """gen (llm) -> check (tool) -> ok: end | error: fix (llm) -> check (budget)."""
    wf = WorkflowBuilder("loop", inputs=["q"], output="check")
    wf.llm("gen", user="{{ q }}", max_tokens=8, output_as="answer",
           fanout=fanout, join=join).then("check")
    wf.tool("check", "t.check", args={"answer": "{{ answer.text }}"}) \
        .end("ok").on("error", "fix", max_traversals=budget)
    wf.llm("fix", user="fix {{ answer.text }}", max_tokens=8, output_as="answer").then("check")
    return wf.compile(tool_exists=tool_exists)


def orchestrator(*workflows: CompiledWorkflow, **kwargs: Any) -> Orchestrator:
    return Orchestrator({w.name: w for w in workflows}, **kwargs)


def result(outcome: str = OK, service_s: float = 0.1, **output: Any) -> CallResult:
    return CallResult(outcome, dict(output) or {"text": "x"}, Usage(10, 0, 2, 0.0, service_s))


def make_call(call_id: str = "c", slack_key: float = 0.0, expected_s: float = 1.0,
              tokens: list[int] | None = None) -> StageCall:
    wf = loop_workflow()
    call = StageCall(call_id, "r", wf.stages["gen"], 1, 0, {}, 10.0, expected_s, slack_key)
    call.request = EngineRequest(call_id, prompt_tokens=tokens or [])
    return call


class FakeView:
    """An engine as a router sees it, with a fixed cached-prefix answer.

    Used only for router/pool decision tests, where what matters is the view.
    """

    def __init__(self, engine_id: str, cached: int = 0, max_concurrency: int = 1) -> None:
        self.engine_id = engine_id
        self.cached = cached
        self.max_concurrency = max_concurrency

    def cached_prefix_len(self, tokens: list[int], model: str | None = None) -> int:
        return min(self.cached, len(tokens))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def llama_servers(count: int = 1, start_timeout_s: float = 90.0) -> Iterator[list[str]]:
    """``count`` real ``python -m llama_cpp.server`` processes serving SmolLM2 on
    loopback (one thread each), started together; yields their base URLs and
    stops them on exit."""
    from cortex.engine.models import smollm2_gguf_path

    ports = [free_port() for _ in range(count)]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf_path()),
         "--host", "127.0.0.1", "--port", str(port), "--n_threads", "1",
         "--n_threads_batch", "1", "--n_ctx", "2048"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for port in ports]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        deadline = time.monotonic() + start_timeout_s
        for proc, url in zip(procs, urls, strict=True):
            while True:
                assert proc.poll() is None, "llama_cpp.server exited during start-up"
                try:
                    if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, (
                    f"llama_cpp.server did not start in {start_timeout_s:g} s")
                time.sleep(0.2)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

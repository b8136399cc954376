"""OpenAIRemoteEngine: against a mock vLLM-like server (usage and /metrics parsing,
retries) and against a real ``python -m llama_cpp.server`` started by the test."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from cortex.allocator.signals import kv_usage
from cortex.core import EngineRequest, SamplingParams
from cortex.engine.base import ContextLengthExceeded, EngineError, EngineRequestError, num_waiting
from cortex.engine.openai_remote import OpenAIRemoteConfig, OpenAIRemoteEngine, parse_prometheus
from tests.factories import free_port, llama_servers

METRICS = """# HELP vllm:prefix_cache_queries Prefix cache queries, in tokens.
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{{engine="0",model_name="m"}} {queries}
vllm:prefix_cache_hits_total{{engine="0",model_name="m"}} {hits}
vllm:num_requests_running{{engine="0",model_name="m"}} 0.0
vllm:num_requests_waiting{{engine="0",model_name="m"}} {waiting}
vllm:kv_cache_usage_perc{{engine="0",model_name="m"}} {kv}
"""


def chat(question: str, max_tokens: int = 8) -> EngineRequest:
    return EngineRequest("c1", messages=[{"role": "user", "content": question}],
                         params=SamplingParams(max_tokens=max_tokens))


class FakeVllm:
    """A vLLM-like server: reports cached tokens, counts prefix-cache hits on /metrics."""

    def __init__(self, connect_failures: int = 0) -> None:
        self.connect_failures = connect_failures
        self.hits, self.queries = 1000.0, 4000.0
        self.waiting, self.kv = 0, 0.25
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.connect_failures:
            self.connect_failures -= 1
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        if path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m"}]})
        if path == "/metrics":
            return httpx.Response(200, text=METRICS.format(hits=self.hits, queries=self.queries,
                                                           waiting=self.waiting, kv=self.kv))
        body = json.loads(request.content)
        self.bodies.append(body)
        if body.get("max_tokens") == 99:
            return httpx.Response(500, text="boom")
        if body.get("max_tokens") == 98:  # vLLM's answer to a prompt over its window
            return httpx.Response(400, json={
                "object": "error", "type": "BadRequestError", "code": 400,
                "message": "This model's maximum context length is 2048 tokens. However, you "
                           "requested 5031 tokens (4975 in the messages, 56 in the completion)."})
        if body.get("max_tokens") == 97:
            return httpx.Response(400, json={"message": "temperature must be >= 0"})
        self.hits, self.queries = self.hits + 96, self.queries + 100
        usage = {"prompt_tokens": 100, "completion_tokens": 3,
                 "prompt_tokens_details": {"cached_tokens": 96}}
        choice = ({"message": {"role": "assistant", "content": "SELECT 1;"}}
                  if path.endswith("chat/completions") else {"text": "SELECT 1;"})
        return httpx.Response(200, json={"choices": [{**choice, "finish_reason": "stop"}],
                                         "usage": usage})


async def fake_engine(server: FakeVllm, **options: Any) -> OpenAIRemoteEngine:
    config = OpenAIRemoteConfig(base_url="http://fake:8000/v1", retry_backoff_s=0, **options)
    engine = OpenAIRemoteEngine("r0", config, transport=httpx.MockTransport(server))
    await engine.start()
    return engine


# ---- fast: mock server ------------------------------------------------------------------
def test_config_validation_and_url_normalisation() -> None:
    assert OpenAIRemoteConfig(base_url="http://h:1/v1/").base_url == "http://h:1"
    with pytest.raises(ValueError, match="base_url"):
        OpenAIRemoteConfig(base_url="h:1")
    with pytest.raises(ValueError, match="max_concurrency"):
        OpenAIRemoteConfig(base_url="http://h:1", max_concurrency=0)


def test_parse_prometheus_sums_label_sets() -> None:
    text = (METRICS.format(hits=5, queries=7, waiting=3, kv=0.5)
            + 'vllm:prefix_cache_hits_total{engine="1"} 2\n')
    metrics = parse_prometheus(text)
    assert metrics["vllm:prefix_cache_hits_total"] == 7.0
    assert metrics["vllm:prefix_cache_queries_total"] == 7.0


async def test_reports_cached_tokens_and_server_counters() -> None:
    server = FakeVllm()
    engine = await fake_engine(server)
    assert engine.model == "m"                       # taken from /v1/models
    chat_reply = await engine.generate(chat("How many?"))
    text_reply = await engine.generate(EngineRequest("t", prompt="SELECT"))
    assert chat_reply.text == text_reply.text == "SELECT 1;"
    assert chat_reply.usage.cached_prompt_tokens == 96 and chat_reply.usage.prompt_tokens == 100
    assert "messages" in server.bodies[0] and server.bodies[1]["prompt"] == "SELECT"
    counters = await engine.refresh_server_metrics()
    assert counters is not None and (counters.hits, counters.queries) == (192, 200)
    assert counters.hit_rate == pytest.approx(0.96)
    stats = engine.stats()
    assert stats.num_cached_prompt_tokens == 192 and stats.server_prefix_cache == counters
    assert engine.tokenize(chat("x")) == [] and engine.cached_prefix_len([1, 2]) == 0
    await engine.close()


async def test_polls_the_servers_waiting_requests_and_kv_usage_for_the_allocator() -> None:
    server = FakeVllm()
    engine = await fake_engine(server, metrics_interval_s=0.01)
    assert (engine.num_waiting, engine.kv_usage()) == (0, 0.25)
    assert (num_waiting(engine), kv_usage(engine)) == (0, 0.25)   # what the allocator reads
    server.waiting, server.kv = 7, 0.9
    for _ in range(100):
        await asyncio.sleep(0.01)
        if engine.num_waiting == 7:
            break
    assert (num_waiting(engine), kv_usage(engine)) == (7, 0.9)
    await engine.close()
    assert engine._poller is None
    quiet = await fake_engine(FakeVllm(), metrics_interval_s=0)   # 0: read at start only
    assert quiet._poller is None and quiet.num_waiting == 0
    await quiet.close()


async def test_retries_connection_failures_only() -> None:
    engine = await fake_engine(FakeVllm(connect_failures=2), max_retries=2)
    assert engine.stats().num_retries == 2
    with pytest.raises(EngineError, match="HTTP 500: boom"):  # the server saw it: no retry
        await engine.generate(EngineRequest("x", prompt="p", params=SamplingParams(max_tokens=99)))
    assert engine.stats().num_retries == 2
    with pytest.raises(ValueError, match="cannot reach .* http://fake:8000"):
        await fake_engine(FakeVllm(connect_failures=3), max_retries=2)
    await engine.close()


async def test_a_request_the_server_refuses_is_the_requests_fault_not_the_engines() -> None:
    # A 400 (vLLM: prompt over the context window) must not count as an engine failure:
    # the runtime would mark the engine unhealthy and retry on the next, which refuses too.
    engine = await fake_engine(FakeVllm())
    long = EngineRequest("x", prompt="p", params=SamplingParams(max_tokens=98))
    with pytest.raises(ContextLengthExceeded, match="maximum context length is 2048") as info:
        await engine.generate(long)
    assert (info.value.n_ctx, info.value.num_tokens) == (2048, 5031)
    assert info.value.code == "context_length_exceeded"
    bad = EngineRequest("y", prompt="p", params=SamplingParams(max_tokens=97))
    with pytest.raises(EngineRequestError, match="refused the request .HTTP 400.") as info:
        await engine.generate(bad)
    assert not isinstance(info.value, ContextLengthExceeded)
    assert engine.stats().num_failures == 0
    await engine.close()


async def test_unreachable_url_fails_at_start() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    engine = OpenAIRemoteEngine("r0", OpenAIRemoteConfig(base_url=url, max_retries=1,
                                                         retry_backoff_s=0.01))
    with pytest.raises(ValueError, match=f"cannot reach the OpenAI-compatible server at {url}"):
        await engine.start()
    with pytest.raises(EngineError, match="not started"):
        await engine.generate(chat("hi"))


# ---- slow: a real llama.cpp server --------------------------------------------------------
@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    with llama_servers(1) as urls:
        yield urls[0]


@pytest.fixture
async def remote(llama_server: str) -> AsyncIterator[OpenAIRemoteEngine]:
    engine = OpenAIRemoteEngine("r0", OpenAIRemoteConfig(base_url=llama_server))
    await engine.start()
    yield engine
    await engine.close()


@pytest.mark.slow
async def test_chat_and_completion_on_a_real_server(remote: OpenAIRemoteEngine) -> None:
    assert remote.model.endswith(".gguf") and await remote.probe()
    reply = await remote.generate(chat("What is SQL?"))
    assert reply.text.strip() and reply.engine_id == "r0"
    assert reply.usage.prompt_tokens > 5 and 0 < reply.usage.output_tokens <= 8
    assert reply.usage.cached_prompt_tokens is None          # llama.cpp server does not say
    assert reply.usage.service_s > 0
    text = await remote.generate(EngineRequest("t", prompt="SELECT name FROM",
                                               params=SamplingParams(max_tokens=4)))
    assert text.text and text.usage.output_tokens <= 4
    assert await remote.refresh_server_metrics() is None     # no vLLM /metrics here


@pytest.mark.slow
async def test_cancellation_closes_the_request(remote: OpenAIRemoteEngine) -> None:
    task = asyncio.create_task(remote.generate(chat("Tell a long story.", max_tokens=100)))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert remote.stats().num_cancelled == 1
    assert remote._client is not None
    assert remote._client._transport._pool.connections == []   # httpx closed the socket
    reply = await remote.generate(chat("Hi", max_tokens=2))   # the engine still works
    assert reply.usage.output_tokens <= 2


@pytest.mark.slow
async def test_a_real_servers_context_refusal_is_a_request_error(
        remote: OpenAIRemoteEngine) -> None:
    # llama.cpp's server refuses a prompt over its 2048-token window; the engine stays
    # healthy and the error says which tokens did not fit.
    long = EngineRequest("long", prompt="SELECT name FROM users; " * 800,
                         params=SamplingParams(max_tokens=4))
    with pytest.raises(ContextLengthExceeded) as info:
        await remote.generate(long)
    assert info.value.n_ctx == 2048 and info.value.num_tokens > 2048, str(info.value)
    assert await remote.probe() and remote.stats().num_failures == 0


@pytest.mark.parametrize("body", [
    ('{"error": {"message": "the request exceeds the available context size, try increasing '
    'it", "type": "exceed_context_size_error"}}'),
    ('{"message": "This model\'s maximum context length is 2048 tokens. However, you requested '
    '5031 tokens."}'),
    "Requested tokens (5031) exceed context window of 2048",
    '{"message": "Input prompt (5031 tokens) is longer than the maximum model length of 2048"}'])
def test_context_refusals_in_the_wordings_servers_use(body: str) -> None:
    from cortex.engine.openai_remote import request_error

    assert isinstance(request_error("engine r0", body), ContextLengthExceeded)

"""The OpenAI-compatible API, driven by the official `openai` package."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from cortex.core import EngineRequest
from cortex.engine.null import prompt_text
from cortex.server.serve import CortexServer
from tests.server.helpers import (
    CHAIN,
    STRICT,
    null_engines,
    running_server,
    wait_until,
    write_config,
)


@pytest.fixture()
def client(chain_server: CortexServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{chain_server.url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def failing_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CortexServer]:
    """Engines that answer nothing: workflow `strict` fails (no edge for `empty`)."""
    path = write_config(tmp_path_factory.mktemp("failing"), workflows=[STRICT],
                        engine={"text": "", "count": 1})
    with running_server(path) as server:
        yield server


def test_models_list_workflows_and_pools(client: openai.OpenAI) -> None:
    models = {m.id: m.owned_by for m in client.models.list()}
    assert models == {"chain": "cortex-workflow", "draft": "cortex-pool",
                      "answer": "cortex-pool"}


def test_chat_with_a_workflow(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="chain", messages=[{"role": "system", "content": "ignored by the workflow"},
                                 {"role": "user", "content": "first"},
                                 {"role": "assistant", "content": "..."},
                                 {"role": "user", "content": "How many?"}])
    assert reply.choices[0].message.content == "hello world"
    assert reply.choices[0].finish_reason == "stop" and reply.model == "chain"
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens == 22
    assert reply.usage.prompt_tokens_details.cached_tokens == 0
    extra = reply.model_extra["cortex"]
    assert extra["status"] == "succeeded" and len(extra["engines"]) == 2


def test_chat_with_a_pool_sends_the_request_itself(client: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    reply = client.chat.completions.create(model="draft", messages=messages, max_tokens=5)
    assert reply.choices[0].message.content == "hello"
    assert reply.choices[0].finish_reason == "length"
    expected = len(prompt_text(EngineRequest("x", messages=messages)).encode())
    assert reply.usage.prompt_tokens == expected  # the request's messages, not a template
    assert reply.model_extra["cortex"]["workflow"] == "pool:draft"


def test_streaming_chat(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="chain", messages=[{"role": "user", "content": "q"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "hello world"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_completions_streaming_and_not(client: openai.OpenAI) -> None:
    reply = client.completions.create(model="answer", prompt="Say hi", max_tokens=32)
    assert reply.choices[0].text == "hello world" and reply.usage.prompt_tokens == 6
    stream = client.completions.create(model="chain", prompt="Say hi", stream=True)
    assert "".join(c.choices[0].text for c in stream) == "hello world"


async def test_async_client_concurrent_chats(chain_server: CortexServer) -> None:
    import asyncio

    client = openai.AsyncOpenAI(base_url=f"{chain_server.url}/v1", api_key="x", max_retries=0)
    replies = await asyncio.gather(*(client.chat.completions.create(
        model="draft", messages=[{"role": "user", "content": f"q{i}"}]) for i in range(30)))
    assert {r.choices[0].message.content for r in replies} == {"hello world"}
    assert len({r.id for r in replies}) == 30
    await client.close()


def test_errors_have_the_openai_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "q"}])
    assert missing.value.body["code"] == "model_not_found"
    assert missing.value.body["param"] == "model"
    with pytest.raises(openai.UnprocessableEntityError) as bad:
        client.chat.completions.create(model="chain", messages=[], n=1)
    assert bad.value.body["param"] == "messages"
    with pytest.raises(openai.UnprocessableEntityError) as many:
        client.chat.completions.create(model="chain", n=2,
                                       messages=[{"role": "user", "content": "q"}])
    assert many.value.body["param"] == "n"
    with pytest.raises(openai.UnprocessableEntityError) as no_user:
        client.chat.completions.create(model="chain",
                                       messages=[{"role": "system", "content": "s"}])
    assert no_user.value.body["param"] == "messages"


def test_failed_workflow_is_an_error_streaming_or_not(failing_server: CortexServer) -> None:
    client = openai.OpenAI(base_url=f"{failing_server.url}/v1", api_key="x", max_retries=0)
    messages = [{"role": "user", "content": "q"}]
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(model="strict", messages=messages)
    assert failed.value.status_code == 502 and "no edge handles it" in failed.value.message
    with pytest.raises(openai.APIError, match="no edge handles it"):
        list(client.chat.completions.create(model="strict", messages=messages, stream=True))


def test_workflow_inputs_via_extra_body(tmp_path: Path) -> None:
    two_inputs = dict(CHAIN, name="ask", inputs=["question", "db"])
    two_inputs["stages"] = [dict(CHAIN["stages"][0], llm={"user": "{{ db }}: {{ question }}"},
                                 next="answer"), CHAIN["stages"][1]]
    with running_server(write_config(tmp_path, workflows=[two_inputs])) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
        messages = [{"role": "user", "content": "q"}]
        with pytest.raises(openai.UnprocessableEntityError) as missing:
            client.chat.completions.create(model="ask", messages=messages)
        assert missing.value.body["param"] == "inputs.db"
        reply = client.chat.completions.create(model="ask", messages=messages,
                                               extra_body={"inputs": {"db": "sales"}})
        assert reply.choices[0].message.content == "hello world"


def test_leaving_a_stream_cancels_its_run(tmp_path: Path) -> None:
    config = write_config(tmp_path, engine={"delay_ms": 5000})
    with running_server(config) as server, httpx.Client(base_url=server.url) as http:
        with http.stream("POST", "/v1/chat/completions", json={
                "model": "chain", "stream": True,
                "messages": [{"role": "user", "content": "q"}]}) as response:
            first = next(response.iter_lines())
            assert first.startswith("data: ") and '"role":"assistant"' in first
        wait_until(lambda: sum(e.num_cancelled for e in null_engines(server)) == 1)
        (run,) = http.get("/v1/runs").json()["runs"]
        assert run["status"] == "cancelled"
        assert run["reason"] == "client disconnected from the stream"

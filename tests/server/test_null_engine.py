"""The zero-cost `null` engine (lives here because the server tests own it)."""
from __future__ import annotations

import asyncio

import pytest

from cortex.config import BACKENDS, parse_config
from cortex.core import EngineRequest, SamplingParams
from cortex.engine.null import NullConfig, NullEngine, prompt_text


def _chat(text: str, max_tokens: int = 16) -> EngineRequest:
    return EngineRequest("c1", messages=[{"role": "system", "content": "sys"},
                                         {"role": "user", "content": text}],
                         params=SamplingParams(max_tokens=max_tokens))


async def test_usage_is_honest() -> None:
    engine = NullEngine("n0", NullConfig(text="SELECT 1;"))
    request = _chat("héllo")
    request.prompt_tokens = engine.tokenize(request)
    completion = await engine.generate(request)
    assert completion.text == "SELECT 1;" and completion.finish_reason == "stop"
    assert completion.usage.prompt_tokens == len(prompt_text(request).encode())
    assert completion.usage.cached_prompt_tokens == 0  # no cache, so nothing is cached
    assert completion.usage.output_tokens == len(b"SELECT 1;")
    assert engine.cached_prefix_len(request.prompt_tokens) == 0


async def test_output_is_cut_to_max_tokens() -> None:
    completion = await NullEngine("n0", NullConfig(text="hello world")).generate(_chat("q", 5))
    assert completion.text == "hello" and completion.finish_reason == "length"
    assert completion.usage.output_tokens == 5


async def test_completion_prompt_and_delay_and_cancellation() -> None:
    engine = NullEngine("n0", NullConfig(delay_ms=5000))
    task = asyncio.create_task(engine.generate(EngineRequest("c", prompt="abc")))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (engine.num_calls, engine.num_cancelled) == (1, 1)
    assert engine.tokenize(EngineRequest("c", prompt="abc")) == list(b"abc")


@pytest.mark.parametrize("options, field", [({"delay_ms": -1}, "delay_ms"),
                                            ({"max_concurrency": 0}, "max_concurrency")])
def test_bad_config_names_the_field(options: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        NullConfig(**options)


def test_registered_as_backend() -> None:
    assert "null" in BACKENDS
    cfg = parse_config({"workflows": [], "engines": [{"backend": "null", "count": 3,
                                                      "delay_ms": 1}]})
    engines = cfg.make_engines()
    assert len(engines) == 3 and all(isinstance(e, NullEngine) for e in engines.values())

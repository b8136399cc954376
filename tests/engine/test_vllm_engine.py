"""VllmEngine: the not-installed message, config checks, and (when vLLM and a model are
available: CORTEX_VLLM_MODEL=<id or folder>) a real generation with prefix caching."""
from __future__ import annotations

import os

import pytest

from cortex.core import EngineRequest, SamplingParams
from cortex.engine.base import EngineError
from cortex.engine.vllm_engine import NOT_INSTALLED, VllmConfig, VllmEngine, vllm_available


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="model"):
        VllmConfig(model="")
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        VllmConfig(model="m", gpu_memory_utilization=1.5)


@pytest.mark.skipif(vllm_available(), reason="vLLM is installed")
async def test_start_says_how_to_install_vllm() -> None:
    engine = VllmEngine("v0", VllmConfig(model="m"))
    with pytest.raises(ValueError) as info:
        await engine.start()
    assert str(info.value) == NOT_INSTALLED
    with pytest.raises(EngineError, match="not started"):
        await engine.generate(EngineRequest("x", prompt="hi"))


@pytest.mark.slow
@pytest.mark.skipif("CORTEX_VLLM_MODEL" not in os.environ,
                    reason="set CORTEX_VLLM_MODEL to a model id or folder to run vLLM")
@pytest.mark.skipif(not vllm_available(), reason="vLLM is not installed (optional extra)")
async def test_real_vllm_reports_cached_prefix() -> None:
    engine = VllmEngine("v0", VllmConfig(model=os.environ["CORTEX_VLLM_MODEL"],
                                         gpu_memory_utilization=0.5))
    await engine.start()
    try:
        system = {"role": "system", "content": "You write SQLite queries. " * 40}
        requests = [EngineRequest(f"r{i}", messages=[system, {"role": "user", "content": q}],
                                  params=SamplingParams(max_tokens=8))
                    for i, q in enumerate(["How many orders?", "How many customers?"])]
        first = await engine.generate(requests[0])
        second = await engine.generate(requests[1])
        assert first.text and second.text
        assert second.usage.cached_prompt_tokens is None \
            or second.usage.cached_prompt_tokens > 0.5 * second.usage.prompt_tokens
    finally:
        await engine.close()

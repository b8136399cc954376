"""A dying engine's in-flight call is retried on another engine of the pool (real llama.cpp)."""
from __future__ import annotations

import asyncio

import pytest

from cortex.config import parse_config
from cortex.core import RunStatus
from cortex.runtime.build import build_runtime


@pytest.mark.slow
async def test_killed_engine_call_is_retried_elsewhere():
    cfg = parse_config({"policy": "shared-fcfs", "workflows": ["nl2sql"],
                        "engines": [{"backend": "llamacpp", "count": 2, "cache_mb": 32}]})
    runtime = await build_runtime(cfg)
    started: asyncio.Queue[dict] = asyncio.Queue()
    runtime.listeners.append(
        lambda e: started.put_nowait(e) if e["type"] == "call_started"
        and e["stage"] == "generate" else None)
    try:
        run = runtime.submit("nl2sql", {"question": "How many employees are there?",
                                        "db": "hr"}, slo_s=120)
        first = await asyncio.wait_for(started.get(), 60)
        runtime.engines[first["engine"]].kill()
        run = await asyncio.wait_for(runtime.wait(run.run_id), 180)
        generate = [t for t in run.trace if t.stage == "generate"]
        assert run.status in (RunStatus.SUCCEEDED, RunStatus.FAILED)
        assert len(generate) == 1 and generate[0].outcome == "ok"
        assert generate[0].engine_id != first["engine"]
        pool = runtime.controller.pools["llm"]
        assert first["engine"] not in pool.healthy_engines()
    finally:
        await runtime.close()


@pytest.mark.slow
async def test_failure_with_no_engine_left_fails_the_run_with_reason():
    cfg = parse_config({"policy": "shared-fcfs", "workflows": ["nl2sql"],
                        "engines": [{"backend": "llamacpp", "count": 1, "cache_mb": 32}]})
    runtime = await build_runtime(cfg)
    try:
        (engine,) = runtime.engines.values()
        engine.kill()
        run = await asyncio.wait_for(runtime.run(
            "nl2sql", {"question": "How many employees?", "db": "hr"}, slo_s=60), 60)
        assert run.status is RunStatus.FAILED
        assert "engine llamacpp-0 failed" in run.reason
    finally:
        await runtime.close()


@pytest.mark.parametrize("gone", ["retired", "never existed"])
async def test_probe_of_an_engine_no_longer_served_ends(gone):
    # An engine retired (scale-in) after a failure must not be probed forever, nor
    # have its health set in a pool it left.
    cfg = parse_config({"policy": "cortex", "workflows": ["nl2sql"],
                        "engines": [{"backend": "null", "count": 2}]})
    runtime = await build_runtime(cfg)
    try:
        engine_id = "null-1" if gone == "retired" else "null-9"
        runtime.controller.engine_pool.pop(engine_id, None)
        await asyncio.wait_for(runtime._probe(engine_id, first_delay_s=0.001), 1.0)
    finally:
        await runtime.close()

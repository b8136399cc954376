"""A dying engine's in-flight call is retried on another engine of the pool (real llama.cpp)."""
from __future__ import annotations

import asyncio

import pytest

from cortex.config import parse_config
from cortex.core import RunStatus
from cortex.runtime.build import build_runtime

pytestmark = pytest.mark.slow


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

"""`cortex.client` (sync and async) and `cortex run --server` against a real server."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cortex.cli import main as cli_main
from cortex.client import AsyncCortexClient, CortexClient, CortexError, SSEParser
from cortex.server.serve import CortexServer
from tests.server.helpers import running_server, write_config


def test_sync_client(chain_server: CortexServer) -> None:
    with CortexClient(chain_server.url) as client:
        assert client.is_ready()
        done = client.run("chain", {"question": "q"}, slo_ms=2000, wait=True)
        assert done["status"] == "succeeded" and done["slo_s"] == 2.0
        run_id = client.run("chain", {"question": "q"})["run_id"]
        events = list(client.events(run_id))
        assert events[0]["type"] == "run_admitted" and events[-1]["type"] == "run_finished"
        assert client.wait(run_id)["status"] == "succeeded"
        assert [w["name"] for w in client.workflows()] == ["chain"]
        assert {p["name"] for p in client.pools()} == {"draft", "answer"}
        assert client.allocation() is None            # a static policy has no allocator
        assert client.models() == ["chain", "draft", "answer"]
        assert client.chat("draft", [{"role": "user", "content": "q"}])["choices"]
        assert "cortex_runs_total" in client.metrics()
        assert any(r["run_id"] == run_id for r in client.list_runs(status="succeeded"))


def test_sync_client_errors(chain_server: CortexServer) -> None:
    with CortexClient(chain_server.url) as client:
        with pytest.raises(CortexError) as missing:
            client.run("chain", {})
        assert (missing.value.status, missing.value.param) == (422, "inputs.question")
        with pytest.raises(CortexError) as unknown:
            client.get_run("run-nope")
        assert unknown.value.status == 404 and unknown.value.error_type == "not_found_error"
        with pytest.raises(CortexError) as no_events:
            list(client.events("run-nope"))
        assert no_events.value.status == 404
    with CortexClient("http://127.0.0.1:9", timeout_s=1) as client:
        with pytest.raises(CortexError, match="cannot reach") as down:
            client.workflows()
        assert down.value.status == 0 and not client.is_ready()


def test_retry_after_reaches_the_client(tmp_path: Path) -> None:
    config = write_config(tmp_path, engine={"delay_ms": 3000, "max_concurrency": 1},
                          max_queue=1)
    with running_server(config) as server, CortexClient(server.url) as client:
        client.run("chain", {"question": "q"})
        client.run("chain", {"question": "q"})
        with pytest.raises(CortexError) as full:
            client.run("chain", {"question": "q"})
        assert full.value.status == 429 and full.value.retry_after_s >= 1


async def test_async_client(chain_server: CortexServer) -> None:
    async with AsyncCortexClient(chain_server.url) as client:
        assert await client.is_ready()
        run = await client.run("chain", {"question": "q"}, wait=True)
        assert run["status"] == "succeeded"
        run_id = (await client.run("chain", {"question": "q"}))["run_id"]
        kinds = [e["type"] async for e in client.events(run_id)]
        assert kinds[0] == "run_admitted" and kinds[-1] == "run_finished"
        assert (await client.wait(run_id))["status"] == "succeeded"
        assert (await client.chat("chain", [{"role": "user", "content": "q"}])
                )["choices"][0]["message"]["content"] == "hello world"
        assert [w["name"] for w in await client.workflows()] == ["chain"]
        assert len(await client.pools()) == 2
        assert await client.allocation(decisions=5) is None
        with pytest.raises(CortexError) as missing:
            await client.cancel("run-nope")
        assert missing.value.status == 404


async def test_async_cancel(tmp_path: Path) -> None:
    config = write_config(tmp_path, engine={"delay_ms": 5000})
    with running_server(config) as server:
        async with AsyncCortexClient(server.url) as client:
            run_id = (await client.run("chain", {"question": "q"}))["run_id"]
            assert (await client.cancel(run_id))["status"] == "cancelled"
            assert (await client.get_run(run_id))["reason"] == "cancelled by client"


def test_cli_run_through_the_server(chain_server: CortexServer, capsys) -> None:
    code = cli_main(["run", "--server", chain_server.url, "chain", "How many?", "--json"])
    run = json.loads(capsys.readouterr().out)
    assert code == 0 and run["status"] == "succeeded"
    assert [t["stage"] for t in run["trace"]] == ["draft", "answer"]
    assert cli_main(["run", "--server", chain_server.url, "chain", "How many?"]) == 0
    assert "succeeded" in capsys.readouterr().out


def test_sse_parser() -> None:
    parser = SSEParser()
    lines = [": keep-alive", "", "id: 1", "event: x", 'data: {"a":', "data: 1}", ""]
    assert [e for e in map(parser.feed, lines) if e is not None] == [{"a": 1}]


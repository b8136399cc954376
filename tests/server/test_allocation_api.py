"""``GET /v1/pools`` shows the allocator: engines' home pools, loans and drains, and
the ``allocation`` object (decisions, moves in flight, refusals, cold starts).
Runs' JSON carries the knobs they turned."""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from cortex.allocator import Decision, DecisionKind
from cortex.server.serve import CortexServer
from tests.server.helpers import (
    CHAIN,
    CHROMIUM_SKIP_REASON,
    chromium,
    running_server,
    wait_until,
    write_config,
)

T = TypeVar("T")


def on_loop(server: CortexServer, fn: Callable[[], T]) -> T:
    """Run ``fn`` on the server's event loop (the controller is not thread-safe)."""
    async def call() -> T:
        return fn()

    assert server._loop is not None
    return asyncio.run_coroutine_threadsafe(call(), server._loop).result(5)


def begin(server: CortexServer, kind: DecisionKind, engine: str, source: str, target: str,
          reason: str) -> bool:
    runtime = server.service.runtime
    decision = Decision(kind, engine, source, target, reason)
    return on_loop(server, lambda: runtime.controller.allocator.begin(decision,
                                                                       runtime.clock()))


@pytest.fixture(scope="module")
def malleable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CortexServer]:
    """`chain` (pools draft, answer) on three null engines under cortex-malleable; the
    static allocation policy moves nothing by itself, so the tests' decisions are
    the only ones."""
    path = write_config(tmp_path_factory.mktemp("malleable"), policy="cortex-malleable",
                        engine={"count": 3},
                        allocator={"policy": "static", "interval_s": 0.02})
    with running_server(path) as server:
        yield server


def pools(client: httpx.Client, **params: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    body = client.get("/v1/pools", params=params).json()
    return {p["name"]: p for p in body["pools"]}, body["allocation"]


def test_pools_show_the_allocator_and_its_moves(malleable: CortexServer) -> None:
    with httpx.Client(base_url=malleable.url, timeout=10.0) as client:
        by_name, allocation = pools(client)
        assert allocation["policy"] == "static" and allocation["interval_s"] == 0.02
        assert allocation["models"] == {"draft": "null", "answer": "null"}
        assert allocation["decisions"] == {"move": 0, "lend": 0, "return": 0,
                                           "scale_out": 0, "scale_in": 0}
        assert allocation["recent"] == [] and allocation["in_flight"] == []
        assert allocation["refused"] == 0 and allocation["scaling"] is None
        for name, pool in by_name.items():
            assert pool["lent_out"] == []
            for engine in pool["engines"]:
                assert engine["home"] == name and not engine["borrowed"]
                assert not engine["draining"] and engine["pending"] is None

        # move an engine from the pool with two to the other
        big = max(by_name, key=lambda n: len(by_name[n]["engines"]))
        small = next(n for n in by_name if n != big)
        moved = by_name[big]["engines"][-1]["id"]
        assert begin(malleable, DecisionKind.MOVE, moved, big, small, "test move")
        wait_until(lambda: moved in [e["id"] for e in pools(client)[0][small]["engines"]])
        by_name, allocation = pools(client)
        assert allocation["decisions"]["move"] == 1 and allocation["in_flight"] == []
        (move,) = allocation["recent"]
        assert {k: move[k] for k in ("kind", "engine", "source", "target", "reason", "done")} == {
            "kind": "move", "engine": moved, "source": big, "target": small,
            "reason": "test move", "done": True}
        assert 0 <= move["t"] <= move["done_t"] and move["time"] > 1e9
        entry = next(e for e in by_name[small]["engines"] if e["id"] == moved)
        assert entry["home"] == small and not entry["borrowed"]

        # lend the other engine of that pool the other way: its home stays, both pools
        # show the loan, and the pool is left with only the (cold) moved engine
        (lent,) = [e["id"] for e in by_name[small]["engines"] if e["id"] != moved]
        assert begin(malleable, DecisionKind.LEND, lent, small, big, "test lend")
        wait_until(lambda: lent in [e["id"] for e in pools(client)[0][big]["engines"]])
        by_name, allocation = pools(client)
        entry = next(e for e in by_name[big]["engines"] if e["id"] == lent)
        assert entry["home"] == small and entry["borrowed"] and not entry["draining"]
        assert by_name[small]["lent_out"] == [{"id": lent, "serving": big}]
        assert [e["id"] for e in by_name[small]["engines"]] == [moved]
        assert [d["kind"] for d in allocation["recent"]] == ["lend", "move"]
        assert allocation["decisions"]["lend"] == 1

        # a decision the allocator refuses is counted, with its reason
        assert not begin(malleable, DecisionKind.MOVE, "no-such-engine", big, small, "bad")
        _, allocation = pools(client)
        assert allocation["refused"] == 1
        (refused,) = allocation["recent_refused"]
        assert refused["engine"] == "no-such-engine" and "not an idle member" in refused["why"]

        # runs are served through the moved and lent engines; cold starts are counted
        for i in range(4):
            run = client.post("/v1/runs", json={"workflow": "chain",
                                                "inputs": {"question": f"q{i}"},
                                                "wait": True}).json()
            assert run["status"] == "succeeded"
        _, allocation = pools(client)
        cold = allocation["cold"][small]   # every call of `small` went to the moved engine
        assert cold["calls"] >= 4 and cold["prompt_tokens"] > 0
        assert cold["cached_prompt_tokens"] == 0 and cold["hit_rate"] == 0.0  # null: no cache

        # the limit on decisions shown, and a bad one
        _, allocation = pools(client, decisions=1)
        assert [d["kind"] for d in allocation["recent"]] == ["lend"]
        assert allocation["num_decisions"] == 2
        assert pools(client, decisions=0)[1]["recent"] == []
        response = client.get("/v1/pools", params={"decisions": -1})
        assert response.status_code == 422
        assert response.json()["error"]["param"] == "query.decisions"

        dashboard = client.get("/v1/dashboard").json()
        assert dashboard["allocation"]["decisions"]["lend"] == 1


@pytest.mark.skipif(bool(CHROMIUM_SKIP_REASON), reason=CHROMIUM_SKIP_REASON)
def test_dashboard_lists_moves_and_loans(tmp_path: Path) -> None:
    path = write_config(tmp_path, policy="cortex-malleable", engine={"count": 3},
                        allocator={"policy": "static", "interval_s": 0.02})
    with running_server(path) as server, httpx.Client(base_url=server.url,
                                                      timeout=10.0) as client:
        by_name, _ = pools(client)
        big = max(by_name, key=lambda n: len(by_name[n]["engines"]))
        small = next(n for n in by_name if n != big)
        lent = by_name[big]["engines"][0]["id"]
        assert begin(server, DecisionKind.LEND, lent, big, small, "idle lender")
        wait_until(lambda: lent in [e["id"] for e in pools(client)[0][small]["engines"]])
        dom = chromium(f"{server.url}/", tmp_path / "profile", "--dump-dom").stdout
    assert '<section id="moves-section">' in dom  # shown: the policy has an allocator
    assert '<tr data-kind="lend">' in dom and "idle lender" in dom
    assert f"{lent} lent to {small}" in dom and f"from {big}" in dom


def test_static_policy_has_no_allocation(http: httpx.Client) -> None:
    body = http.get("/v1/pools").json()
    assert body["allocation"] is None
    for pool in body["pools"]:
        assert pool["lent_out"] == []
        assert all(e["home"] == pool["name"] and not e["borrowed"] for e in pool["engines"])
    assert http.get("/v1/dashboard").json()["allocation"] is None


def test_run_json_has_knobs_turned(tmp_path: Path) -> None:
    """The server's orchestrator gets the workflow's knobs: a run that starts with
    negative slack turns the cheapest one, and GET /v1/runs/{id} shows it."""
    chain = {**CHAIN, "knobs": [{"name": "short-answer", "stage": "answer",
                                 "max_tokens": 4, "cost": 0.1}]}
    path = write_config(tmp_path, [chain], engine={"delay_ms": 5})
    with running_server(path) as server, httpx.Client(base_url=server.url,
                                                      timeout=10.0) as client:
        late = client.post("/v1/runs", json={"workflow": "chain", "inputs": {"question": "q"},
                                             "slo_ms": 0.001, "wait": True}).json()
        run = client.get(f"/v1/runs/{late['run_id']}").json()
        assert [k["knob"] for k in run["knobs_turned"]] == ["short-answer"]
        assert run["knobs_turned"][0]["stage"] == "answer"
        relaxed = client.post("/v1/runs", json={"workflow": "chain",
                                                "inputs": {"question": "q"},
                                                "wait": True}).json()
        assert client.get(f"/v1/runs/{relaxed['run_id']}").json()["knobs_turned"] == []

"""The workflow API over a real server: runs, events, cancellation, errors, concurrency."""
from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import httpx

from cortex.client import SSEParser
from tests.server.helpers import null_engines, running_server, wait_until, write_config


def _events(client: httpx.Client, run_id: str, headers: dict | None = None) -> list[dict]:
    parser, out = SSEParser(), []
    with client.stream("GET", f"/v1/runs/{run_id}/events", headers=headers or {}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            event = parser.feed(line)
            if event is not None:
                out.append(event)
    return out


def test_submit_then_read(http: httpx.Client) -> None:
    response = http.post("/v1/runs", json={"workflow": "chain", "inputs": {"question": "q"},
                                           "slo_ms": 5000})
    assert response.status_code == 202
    run_id = response.json()["run_id"]
    assert response.headers["location"] == f"/v1/runs/{run_id}"
    wait_until(lambda: http.get(f"/v1/runs/{run_id}").json()["status"] == "succeeded")
    run = http.get(f"/v1/runs/{run_id}").json()
    assert run["output"] == {"text": "hello world"} and run["slo_s"] == 5.0
    assert [t["stage"] for t in run["trace"]] == ["draft", "answer"]
    assert any(r["run_id"] == run_id for r in http.get("/v1/runs").json()["runs"])


def test_wait_returns_the_finished_run(http: httpx.Client) -> None:
    response = http.post("/v1/runs", json={"workflow": "chain", "inputs": {"question": "q"},
                                           "wait": True})
    assert response.status_code == 200
    run = response.json()
    assert run["status"] == "succeeded" and run["met_slo"] is True
    trace = run["trace"]
    assert {t["pool"] for t in trace} == {"draft", "answer"}
    assert all(t["engine"].startswith("null-") and t["prompt_tokens"] > 0 for t in trace)


def test_events_stream_every_call_then_the_terminal_state(http: httpx.Client) -> None:
    run_id = http.post("/v1/runs", json={"workflow": "chain",
                                         "inputs": {"question": "q"}}).json()["run_id"]
    events = _events(http, run_id)
    kinds = [e["type"] for e in events]
    assert kinds == ["run_admitted", "call_queued", "call_started", "call_finished",
                     "call_queued", "call_started", "call_finished", "run_finished"]
    finished = [e for e in events if e["type"] == "call_finished"]
    assert all(e["engine"] and "cached_prompt_tokens" in e and e["prompt_tokens"] > 0
               for e in finished)
    assert events[-1]["status"] == "succeeded" and len(events[-1]["trace"]) == 2
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    resumed = _events(http, run_id, {"Last-Event-ID": "6"})
    assert [e["seq"] for e in resumed] == [7, 8]


def test_concurrent_runs(chain_server) -> None:
    async def go() -> list[dict]:
        async with httpx.AsyncClient(base_url=chain_server.url, timeout=30) as client:
            responses = await asyncio.gather(*(
                client.post("/v1/runs", json={"workflow": "chain", "wait": True,
                                              "inputs": {"question": f"q{i}"}})
                for i in range(100)))
        return [r.json() for r in responses]

    runs = asyncio.run(go())
    assert len({r["run_id"] for r in runs}) == 100
    assert all(r["status"] == "succeeded" for r in runs)


def test_cancel_stops_in_flight_engine_calls(tmp_path: Path) -> None:
    config = write_config(tmp_path, engine={"delay_ms": 5000})
    with running_server(config) as server, httpx.Client(base_url=server.url) as http:
        run_id = http.post("/v1/runs", json={"workflow": "chain",
                                             "inputs": {"question": "q"}}).json()["run_id"]
        events: list[dict] = []
        follower = threading.Thread(target=lambda: events.extend(_events(http, run_id)))
        follower.start()
        wait_until(lambda: sum(e.num_calls for e in null_engines(server)) == 1)
        response = http.delete(f"/v1/runs/{run_id}")
        assert response.status_code == 200 and response.json()["status"] == "cancelled"
        follower.join(5)
        assert [e["type"] for e in events][-2:] == ["call_cancelled", "run_finished"]
        assert events[-1]["status"] == "cancelled"
        wait_until(lambda: sum(e.num_cancelled for e in null_engines(server)) == 1)
        again = http.delete(f"/v1/runs/{run_id}")
        assert again.status_code == 409 and again.json()["error"]["param"] == "run_id"


def test_a_cancelled_call_stays_in_the_trace(tmp_path: Path) -> None:
    """Started or still queued, a cancelled call is in the run's trace (outcome
    `cancelled`) and has its `call_cancelled` event, before `run_finished`."""
    config = write_config(tmp_path, engine={"delay_ms": 5000, "max_concurrency": 1})
    with running_server(config) as server, httpx.Client(base_url=server.url) as http:
        body = {"workflow": "chain", "inputs": {"question": "q"}}
        started, queued = (http.post("/v1/runs", json=body).json()["run_id"] for _ in range(2))
        wait_until(lambda: sum(e.num_calls for e in null_engines(server)) == 1)
        for run_id in (queued, started):
            assert http.delete(f"/v1/runs/{run_id}").status_code == 200
        for run_id, engine in ((started, "null-"), (queued, "")):
            run = http.get(f"/v1/runs/{run_id}").json()
            (call,) = run["trace"]
            assert (call["stage"], call["outcome"], call["pool"]) == ("draft", "cancelled",
                                                                      "draft")
            assert call["engine"].startswith(engine) and (engine or call["engine"] == "")
            events = _events(http, run_id)
            kinds = [e["type"] for e in events]
            assert kinds[-2:] == ["call_cancelled", "run_finished"]
            assert kinds.count("call_started") == (1 if engine else 0)
            assert events[-2]["call_id"] == call["call_id"] and events[-2]["pool"] == "draft"
            assert events[-1]["trace"] == run["trace"]
        metrics = http.get("/metrics").text
        assert 'cortex_stage_calls_cancelled_total{pool="draft",stage="draft"} 2.0' in metrics


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def test_validation_errors_name_the_field(http: httpx.Client) -> None:
    assert _error(http.post("/v1/runs", json={"workflow": "chain", "inputs": {}}),
                  422)["param"] == "inputs.question"
    assert _error(http.post("/v1/runs", json={"workflow": "chain", "slo_ms": 0,
                                              "inputs": {"question": "q"}}), 422)["param"] \
        == "slo_ms"
    assert _error(http.post("/v1/runs", json={"workflow": "chain", "bogus": 1}),
                  422)["param"] == "bogus"
    assert _error(http.post("/v1/runs", json={"inputs": {}}), 422)["param"] == "workflow"
    bad_json = http.post("/v1/runs", content=b"{not json",
                         headers={"content-type": "application/json"})
    assert _error(bad_json, 422)["code"] == "invalid_json"


def test_a_body_that_is_not_a_json_object_says_what_is_expected(http: httpx.Client) -> None:
    for path, required in (("/v1/runs", "workflow"), ("/v1/chat/completions", "model")):
        array = _error(http.post(path, json=[1, 2]), 422)
        assert array["message"].startswith("the request body must be a JSON object")
        assert "got an array" in array["message"] and required in array["message"]
        for headers in ({"content-type": "text/plain"}, {}):
            wrong = _error(http.post(path, content=b'{"workflow": "chain"}', headers=headers),
                           422)
            assert "Content-Type: application/json" in wrong["message"]
            assert wrong["code"] == "invalid_content_type"
        for headers in ({"content-type": "application/json"}, {}):
            empty = _error(http.post(path, content=b"", headers=headers), 422)
            assert empty["message"].startswith("the request body is empty")
            assert empty["param"] == required
    missing = _error(http.post("/v1/runs", json={"inputs": {}}), 422)
    assert missing["message"] == "missing required field 'workflow'"
    unknown = _error(http.post("/v1/runs", json={"workflow": "chain", "bogus": 1}), 422)
    assert unknown["message"].startswith("unknown field 'bogus' (fields: workflow, inputs")


def test_booleans_and_numbers_are_strict(http: httpx.Client) -> None:
    body = {"workflow": "chain", "inputs": {"question": "q"}}
    for wait in ("yes", "true", 1, 0, None):
        error = _error(http.post("/v1/runs", json={**body, "wait": wait}), 422)
        assert error["param"] == "wait" and "true or false" in error["message"]
    for slo in ("100", True):
        assert _error(http.post("/v1/runs", json={**body, "slo_ms": slo}), 422)["param"] \
            == "slo_ms"
    chat = {"model": "draft", "messages": [{"role": "user", "content": "q"}]}
    for field, value in (("stream", "yes"), ("n", True), ("max_tokens", "5"),
                         ("stream_options", {"include_usage": "yes"})):
        error = _error(http.post("/v1/chat/completions", json={**chat, field: value}), 422)
        assert error["param"].startswith(field)
    assert http.post("/v1/runs", json={**body, "wait": True, "slo_ms": 5000}).status_code == 200


def test_unknown_workflow_and_run_are_404(http: httpx.Client) -> None:
    assert _error(http.post("/v1/runs", json={"workflow": "nope"}), 404)["param"] == "workflow"
    for method, path in (("GET", "/v1/runs/run-x"), ("DELETE", "/v1/runs/run-x"),
                         ("GET", "/v1/runs/run-x/events"), ("GET", "/v1/nothing")):
        _error(http.request(method, path), 404)


def test_body_over_the_limit_is_413(tmp_path: Path) -> None:
    config = write_config(tmp_path, server={"max_body_bytes": 2048})
    with running_server(config) as server, httpx.Client(base_url=server.url) as http:
        big = {"workflow": "chain", "inputs": {"question": "x" * 4096}}
        assert _error(http.post("/v1/runs", json=big), 413)["code"] == "request_too_large"
        chunks = (json.dumps(big)[i:i + 512].encode() for i in range(0, 5000, 512))
        _error(http.post("/v1/runs", content=chunks,
                         headers={"content-type": "application/json"}), 413)
        small = {"workflow": "chain", "inputs": {"question": "x"}}
        assert http.post("/v1/runs", json=small).status_code == 202


def test_full_queue_is_429_with_retry_after(tmp_path: Path) -> None:
    config = write_config(tmp_path, engine={"delay_ms": 3000, "max_concurrency": 1},
                          max_queue=1)
    with running_server(config) as server, httpx.Client(base_url=server.url) as http:
        body = {"workflow": "chain", "inputs": {"question": "q"}}
        first, second = http.post("/v1/runs", json=body), http.post("/v1/runs", json=body)
        assert (first.status_code, second.status_code) == (202, 202)  # running, queued
        third = http.post("/v1/runs", json=body)
        error = _error(third, 429)
        assert "queue is full" in error["message"] and int(third.headers["retry-after"]) >= 1
        metrics = http.get("/metrics").text
        assert 'cortex_admission_rejected_total{reason="queue_full"} 1.0' in metrics


def test_nl2sql_with_tool_stages(tmp_path: Path) -> None:
    config = write_config(tmp_path, engine={"text": "SELECT COUNT(*) FROM customers;"})
    config.write_text(config.read_text().replace("- chain.yaml", "- nl2sql"))
    with running_server(config) as server, httpx.Client(base_url=server.url) as http:
        run_id = http.post("/v1/runs", json={"workflow": "nl2sql", "inputs": {
            "question": "How many customers are there?", "db": "sales"}}).json()["run_id"]
        events = _events(http, run_id)
    calls = [(e["type"], e["stage"], e["pool"]) for e in events if "stage" in e]
    assert calls[:3] == [("call_queued", "schema", "tools"), ("call_started", "schema", "tools"),
                         ("call_finished", "schema", "tools")]
    assert ("call_finished", "generate", "generate") in calls
    final = events[-1]
    assert final["status"] == "succeeded" and final["output"]["columns"] == ["COUNT(*)"]

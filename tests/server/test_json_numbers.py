"""No NaN or Infinity in or out: non-finite numbers are refused before admission, and a
non-finite value that reaches a response or an event goes out as null (valid JSON)."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cortex.client import SSEParser
from cortex.core import OK, ToolResult
from cortex.server.jsonsafe import dumps, finite
from cortex.server.serve import CortexServer
from cortex.server.service import Submission
from cortex.server.sse import sse_frame
from cortex.tools import TOOLS
from tests.server.helpers import CHAIN, running_server, write_config

NONFINITE_TOOL = "test.nonfinite"
if NONFINITE_TOOL not in TOOLS:
    TOOLS.add(NONFINITE_TOOL, lambda args: ToolResult(OK, {"big": float("inf"),
                                                           "nan": float("nan"), "ok": 1.5}))
NUMBERS = {"name": "numbers", "inputs": ["question"], "output": "calc",
           "stages": [{"name": "calc", "tool": NONFINITE_TOOL, "args": {"q": "{{ question }}"}}]}
BASE = b'"workflow":"chain","inputs":{"question":"q"}'


def strict_json(text: str) -> Any:
    """``json.loads`` that refuses NaN and Infinity, as every JSON parser but Python's does."""
    def refuse(constant: str) -> None:
        raise AssertionError(f"invalid JSON constant {constant} in {text[:200]}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CortexServer]:
    path = write_config(tmp_path_factory.mktemp("numbers"), workflows=[CHAIN, NUMBERS])
    with running_server(path) as server:
        yield server


def _post(url: str, path: str, raw: bytes) -> httpx.Response:
    # A fresh connection each time: a 500 would close a shared one.
    return httpx.post(f"{url}{path}", content=raw, headers={"content-type": "application/json"},
                      timeout=10)


def _num_runs(url: str) -> int:
    return len(httpx.get(f"{url}/v1/runs", params={"limit": 1000}).json()["runs"])


@pytest.mark.parametrize("field, value", [
    ("slo_ms", "1e400"), ("slo_ms", "-1e400"), ("slo_ms", "Infinity"), ("slo_ms", "NaN"),
    ("timeout_ms", "Infinity"), ("timeout_ms", "1e400"), ("timeout_ms", "NaN"),
    ("timeout_ms", "0"), ("slo_ms", "-5"), ("slo_ms", '"100"'), ("slo_ms", "true")])
def test_non_finite_or_non_positive_numbers_are_refused_before_admission(
        server: CortexServer, field: str, value: str) -> None:
    before = _num_runs(server.url)
    for wait in ("true", "false"):
        raw = b"{" + BASE + f',"{field}":{value},"wait":{wait}}}'.encode()
        response = _post(server.url, "/v1/runs", raw)
        assert response.status_code == 422, response.text
        error = strict_json(response.text)["error"]
        assert error["param"] == field and field in error["message"]
    assert _num_runs(server.url) == before


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize("field, value", [("slo_ms", "1e400"), ("slo_ms", "NaN"),
                                          ("temperature", "NaN"), ("top_p", "Infinity")])
def test_openai_endpoints_refuse_non_finite_numbers(server: CortexServer, path: str,
                                                    field: str, value: str) -> None:
    before = _num_runs(server.url)
    prompt = ('"messages":[{"role":"user","content":"q"}]' if "chat" in path
              else '"prompt":"q"')
    raw = f'{{"model":"draft",{prompt},"{field}":{value}}}'.encode()
    response = _post(server.url, path, raw)
    assert response.status_code == 422, response.text
    assert strict_json(response.text)["error"]["param"] == field
    assert _num_runs(server.url) == before


def test_the_service_refuses_a_non_finite_slo_too(server: CortexServer) -> None:
    from cortex.server.errors import InvalidRequest

    for sub in (Submission("chain", {"question": "q"}, slo_s=float("inf")),
                Submission("chain", {"question": "q"}, timeout_s=float("nan"))):
        with pytest.raises(InvalidRequest) as refused:
            server.service.submit(sub)
        assert refused.value.param in ("slo_ms", "timeout_ms")


def test_a_non_finite_output_goes_out_as_null(server: CortexServer) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        waited = http.post("/v1/runs", json={"workflow": "numbers", "inputs": {"question": "q"},
                                             "wait": True})
        assert waited.status_code == 200, waited.text
        run = strict_json(waited.text)
        assert run["status"] == "succeeded"
        assert run["output"] == {"big": None, "nan": None, "ok": 1.5}
        assert strict_json(http.get(f"/v1/runs/{run['run_id']}").text)["output"]["big"] is None
        parser, events = SSEParser(), []
        with http.stream("GET", f"/v1/runs/{run['run_id']}/events") as stream:
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    strict_json(line[len("data: "):])
                event = parser.feed(line)
                if event is not None:
                    events.append(event)
        assert events[-1]["type"] == "run_finished" and events[-1]["output"]["nan"] is None
        chat = http.post("/v1/chat/completions", json={
            "model": "numbers", "messages": [{"role": "user", "content": "q"}]})
        assert chat.status_code == 200, chat.text
        content = strict_json(chat.text)["choices"][0]["message"]["content"]
        assert strict_json(content) == {"big": None, "nan": None, "ok": 1.5}


def test_encoders_never_emit_nan_or_infinity() -> None:
    data = {"a": [float("inf"), (float("-inf"), 2.0)], "b": {"c": float("nan")}, "d": "x"}
    assert finite(data) == {"a": [None, [None, 2.0]], "b": {"c": None}, "d": "x"}
    assert strict_json(dumps(data)) == finite(data)
    frame = sse_frame({"slo_s": float("inf")}, event="run_finished", event_id=3).decode()
    assert frame.endswith('data: {"slo_s":null}\n\n')

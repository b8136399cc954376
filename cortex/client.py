"""Python clients for a running ``cortex serve``: ``CortexClient`` (sync) and
``AsyncCortexClient`` (asyncio), over ``httpx``.

    with CortexClient("http://127.0.0.1:8080") as client:
        run = client.run("nl2sql", {"question": "...", "db": "sales"}, wait=True)
        for event in client.events(run_id):  # server-sent events, until the run ends
            ...

Every error response raises ``CortexError`` with the HTTP status, the error
type and message, the offending field (``param``) and ``Retry-After`` for 429/503.
The API key defaults to the ``CORTEX_API_KEY`` environment variable.
For chat, the official ``openai`` package works against ``{url}/v1`` unchanged.
"""
from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from typing_extensions import Self

TERMINAL_EVENT = "run_finished"


class CortexError(RuntimeError):
    """An error answer from the server (or no answer: ``status`` 0)."""

    def __init__(self, status: int, message: str, error_type: str = "",
                 param: str | None = None, code: str | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.param = param
        self.code = code
        self.retry_after_s = retry_after_s


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json().get("error", {})
    except (ValueError, AttributeError):
        error = {}
    retry = response.headers.get("retry-after")
    raise CortexError(response.status_code, error.get("message") or response.text,
                      error.get("type", ""), error.get("param"), error.get("code"),
                      float(retry) if retry and retry.isdigit() else None)


def _connection_error(base_url: str, exc: httpx.TransportError) -> CortexError:
    return CortexError(0, f"cannot reach Cortex server at {base_url}: {exc}")


def _run_body(workflow: str, inputs: dict[str, Any], slo_ms: float | None,
              timeout_ms: float | None, wait: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"workflow": workflow, "inputs": inputs, "wait": wait}
    if slo_ms is not None:
        body["slo_ms"] = slo_ms
    if timeout_ms is not None:
        body["timeout_ms"] = timeout_ms
    return body


class SSEParser:
    """Incremental ``text/event-stream`` parser: feed lines, get complete events."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> dict[str, Any] | None:
        if line.startswith(":"):
            return None  # keep-alive comment
        if line:
            field, _, value = line.partition(":")
            if field == "data":
                self._data.append(value.removeprefix(" "))
            return None
        if not self._data:
            return None
        data, self._data = "\n".join(self._data), []
        return json.loads(data)


def _headers(api_key: str | None) -> dict[str, str]:
    key = api_key if api_key is not None else os.environ.get("CORTEX_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


class CortexClient:
    """Synchronous client.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8080``.
        api_key: sent as a bearer token (default: ``$CORTEX_API_KEY``).
        timeout_s: per-request timeout; waiting calls use no read timeout.
        transport: an ``httpx`` transport (tests).
    """

    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=_headers(api_key),
                                  timeout=timeout_s, transport=transport)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _no_read_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self._http.timeout.connect, read=None)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _connection_error(self.base_url, exc) from None
        _raise_for(response)
        return response.json() if "json" in response.headers.get("content-type", "") \
            else response.text

    def run(self, workflow: str, inputs: dict[str, Any], slo_ms: float | None = None,
            wait: bool = False, timeout_ms: float | None = None) -> dict[str, Any]:
        """Admit a run: its id and status, or (``wait``) the finished run with its trace."""
        body = _run_body(workflow, inputs, slo_ms, timeout_ms, wait)
        return self._call("POST", "/v1/runs", json=body, timeout=self._no_read_timeout()
                          if wait else httpx.USE_CLIENT_DEFAULT)

    def get_run(self, run_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/runs/{run_id}")

    def list_runs(self, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        params = {"limit": limit, **({"status": status} if status else {})}
        return self._call("GET", "/v1/runs", params=params)["runs"]

    def cancel(self, run_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/runs/{run_id}")

    def events(self, run_id: str) -> Iterator[dict[str, Any]]:
        """The run's events (replayed from the start, then live) until it ends."""
        parser = SSEParser()
        try:
            with self._http.stream("GET", f"/v1/runs/{run_id}/events",
                                   timeout=self._no_read_timeout()) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for(response)
                for line in response.iter_lines():
                    event = parser.feed(line)
                    if event is not None:
                        yield event
                        if event["type"] == TERMINAL_EVENT:
                            return
        except httpx.TransportError as exc:
            raise _connection_error(self.base_url, exc) from None

    def wait(self, run_id: str) -> dict[str, Any]:
        """Follow the run's events and return its final state."""
        for _ in self.events(run_id):
            pass
        return self.get_run(run_id)

    def chat(self, model: str, messages: list[dict[str, str]], **params: Any
             ) -> dict[str, Any]:
        """One OpenAI-style chat completion (``model``: a workflow or a pool)."""
        return self._call("POST", "/v1/chat/completions",
                          json={"model": model, "messages": messages, **params},
                          timeout=self._no_read_timeout())

    def workflows(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/workflows")["workflows"]

    def pools(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/pools")["pools"]

    def allocation(self, decisions: int = 50) -> dict[str, Any] | None:
        """The allocator's state and last ``decisions`` moves (None: static policy)."""
        return self._call("GET", f"/v1/pools?decisions={int(decisions)}")["allocation"]

    def models(self) -> list[str]:
        return [m["id"] for m in self._call("GET", "/v1/models")["data"]]

    def is_ready(self) -> bool:
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def metrics(self) -> str:
        return self._call("GET", "/metrics")


class AsyncCortexClient:
    """Asyncio client; the same methods as ``CortexClient``, awaited."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=_headers(api_key),
                                       timeout=timeout_s, transport=transport)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _connection_error(self.base_url, exc) from None
        _raise_for(response)
        return response.json() if "json" in response.headers.get("content-type", "") \
            else response.text

    def _no_read_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self._http.timeout.connect, read=None)

    async def run(self, workflow: str, inputs: dict[str, Any], slo_ms: float | None = None,
                  wait: bool = False, timeout_ms: float | None = None) -> dict[str, Any]:
        body = _run_body(workflow, inputs, slo_ms, timeout_ms, wait)
        return await self._call("POST", "/v1/runs", json=body, timeout=self._no_read_timeout()
                                if wait else httpx.USE_CLIENT_DEFAULT)

    async def get_run(self, run_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/runs/{run_id}")

    async def cancel(self, run_id: str) -> dict[str, Any]:
        return await self._call("DELETE", f"/v1/runs/{run_id}")

    async def events(self, run_id: str) -> AsyncIterator[dict[str, Any]]:
        parser = SSEParser()
        try:
            async with self._http.stream("GET", f"/v1/runs/{run_id}/events",
                                         timeout=self._no_read_timeout()) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _raise_for(response)
                async for line in response.aiter_lines():
                    event = parser.feed(line)
                    if event is not None:
                        yield event
                        if event["type"] == TERMINAL_EVENT:
                            return
        except httpx.TransportError as exc:
            raise _connection_error(self.base_url, exc) from None

    async def wait(self, run_id: str) -> dict[str, Any]:
        async for _ in self.events(run_id):
            pass
        return await self.get_run(run_id)

    async def chat(self, model: str, messages: list[dict[str, str]], **params: Any
                   ) -> dict[str, Any]:
        return await self._call("POST", "/v1/chat/completions",
                                json={"model": model, "messages": messages, **params},
                                timeout=self._no_read_timeout())

    async def workflows(self) -> list[dict[str, Any]]:
        return (await self._call("GET", "/v1/workflows"))["workflows"]

    async def pools(self) -> list[dict[str, Any]]:
        return (await self._call("GET", "/v1/pools"))["pools"]

    async def allocation(self, decisions: int = 50) -> dict[str, Any] | None:
        """The allocator's state and last ``decisions`` moves (None: static policy)."""
        return (await self._call("GET", f"/v1/pools?decisions={int(decisions)}"))["allocation"]

    async def is_ready(self) -> bool:
        try:
            return (await self._http.get("/readyz")).status_code == 200
        except httpx.TransportError:
            return False

"""An engine that is a remote OpenAI-compatible server (vLLM, SGLang, llama.cpp server...).

Ownership: the engine owns one ``httpx.AsyncClient`` (its connection pool) and
its counters; the server owns the model, the batching and the KV cache.

Cache accounting stays honest (docs/engines.md):

* per call, ``Usage.cached_prompt_tokens`` is the response's
  ``usage.prompt_tokens_details.cached_tokens`` when the server sends it (vLLM
  with ``--enable-prompt-tokens-details``), else ``None`` (unknown), never a guess;
* server-wide, ``refresh_server_metrics()`` reads vLLM's Prometheus counters
  (``vllm:prefix_cache_hits`` / ``vllm:prefix_cache_queries``, or the older
  ``vllm:gpu_prefix_cache_hit_rate`` gauge) as deltas since ``start()``;
* the scheduler's gauges — ``vllm:num_requests_waiting`` and KV-cache usage
  (``vllm:kv_cache_usage_perc``, or v0's ``vllm:gpu_cache_usage_perc``) — are polled
  every ``metrics_interval_s`` while the engine runs, so the allocator sees calls the
  server holds but cannot run yet (``num_waiting``) and its memory pressure
  (``kv_usage()``), as it does for simulated engines; servers without vLLM metrics
  report neither;
* ``tokenize()`` returns ``[]`` (no local tokenizer; a synchronous HTTP call
  would block the event loop) and ``cached_prefix_len()`` returns 0, so routers
  place remote calls by load only.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import httpx

from cortex.core import Completion, EngineRequest, Usage
from cortex.engine.base import (
    BaseEngine,
    ContextLengthExceeded,
    EngineError,
    EngineRequestError,
)

log = logging.getLogger(__name__)
_RETRYABLE = (httpx.ConnectError, httpx.ConnectTimeout)   # the server never saw the request


@dataclass(slots=True)
class OpenAIRemoteConfig:
    """Args:
        base_url: server root, e.g. ``http://127.0.0.1:8000`` (a trailing ``/v1`` is accepted).
        model: model id sent to the server; ``""`` takes the first one ``/v1/models`` lists.
            A request's ``EngineRequest.model``, when set, is sent instead.
        api_key: sent as ``Authorization: Bearer``.
        connect_timeout_s: time to open a connection.
        read_timeout_s: time to wait for a response (a whole non-streamed completion).
        max_retries: extra attempts after a connection failure (never after the server
            received the request: a retry could run the call twice).
        retry_backoff_s: first backoff; doubles per retry.
        use_chat: send ``messages`` to ``/v1/chat/completions`` (the server applies the
            chat template); False flattens them into a ``/v1/completions`` prompt.
        max_concurrency: calls in flight on this engine (the server batches them).
        metrics_interval_s: how often to read the server's scheduler gauges (waiting
            requests, KV-cache usage) from ``/metrics``; 0 never does. Only when the
            server exports vLLM metrics at start. If several engines share one server,
            each sees the whole server's gauges.
    """

    base_url: str
    model: str = ""
    api_key: str | None = None
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 300.0
    max_retries: int = 2
    retry_backoff_s: float = 0.2
    use_chat: bool = True
    max_concurrency: int = 8
    metrics_interval_s: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.base_url, str) or not re.match(r"^https?://", self.base_url):
            raise ValueError(f"OpenAIRemoteConfig.base_url must be an http(s) URL, "
                             f"got {self.base_url!r}")
        self.base_url = re.sub(r"/v1/?$", "", self.base_url.rstrip("/"))
        for name in ("connect_timeout_s", "read_timeout_s", "retry_backoff_s",
                     "metrics_interval_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"OpenAIRemoteConfig.{name} must be a number >= 0, "
                                 f"got {value!r}")
        for name, low in (("max_retries", 0), ("max_concurrency", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"OpenAIRemoteConfig.{name} must be an integer >= {low}, "
                                 f"got {value!r}")


class PrefixCacheCounters(NamedTuple):
    """Server-side prefix-cache figures; None where the server does not export them."""

    hits: float | None          # prompt tokens served from cache since start (vLLM v1)
    queries: float | None       # prompt tokens looked up since start (vLLM v1)
    hit_rate: float | None      # hits / queries, or vLLM v0's gauge


@dataclass(slots=True)
class RemoteStats:
    num_calls: int = 0
    num_failures: int = 0
    num_cancelled: int = 0
    num_retries: int = 0
    num_prompt_tokens: int = 0
    num_cached_prompt_tokens: int = 0      # sum of what responses reported
    num_calls_with_cache_info: int = 0     # calls whose response reported cached tokens
    server_prefix_cache: PrefixCacheCounters | None = None


_CONTEXT = re.compile(r"context[ _](length|window|size)|maximum context|maximum model length|"
                      r"too many tokens|exceeds? the (model's )?(max|context)", re.IGNORECASE)


def _error_message(body: str) -> str:
    """The ``message`` of an error body (vLLM: top level; OpenAI: under ``error``), else
    the body."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if isinstance(data, dict):
        inner = data.get("error") if isinstance(data.get("error"), dict) else data
        if isinstance(inner.get("message"), str):
            return inner["message"]
    return body


def request_error(where: str, body: str) -> EngineRequestError:
    """The error for a request a remote server refused with ``body``:
    ``ContextLengthExceeded`` when the body says the prompt is over the context window
    (the window and the tokens asked for are the first two numbers both vLLM and
    llama.cpp's server name, 0 when absent), else ``EngineRequestError``."""
    text = _error_message(body)
    message = f"{where}: {text}"
    if not _CONTEXT.search(text):
        return EngineRequestError(message)
    numbers = [int(n) for n in re.findall(r"\d+", text)][:2]
    if len(numbers) < 2:
        return ContextLengthExceeded(message, 0, 0)
    return ContextLengthExceeded(message, max(numbers), min(numbers))


class OpenAIRemoteEngine(BaseEngine):
    """A ``BaseEngine`` over HTTP (see the module docstring)."""

    def __init__(self, engine_id: str, config: OpenAIRemoteConfig,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        """``transport`` replaces the network (tests: ``httpx.MockTransport``)."""
        self.engine_id = engine_id
        self.config = config
        self.model = config.model
        self.max_concurrency = config.max_concurrency
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None
        self._stats = RemoteStats()
        self._metrics_at_start: dict[str, float] | None = None
        self._gauges: dict[str, float] = {}
        self._poller: asyncio.Task[None] | None = None

    # ---- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Connect and check ``/v1/models``.

        Raises:
            ValueError: the server is unreachable, rejects the key, or serves no model.
        """
        if self._client is not None:
            return
        client = self._make_client()
        try:
            reply = await self._with_retries(lambda: client.get("/v1/models"))
        except httpx.HTTPError as exc:
            await client.aclose()
            raise ValueError(f"cannot reach the OpenAI-compatible server at "
                             f"{self.config.base_url} ({type(exc).__name__}: {exc}); start the "
                             f"server or fix base_url") from None
        if reply.status_code != 200:
            await client.aclose()
            hint = "set api_key" if reply.status_code in (401, 403) else "check base_url"
            raise ValueError(f"{self.config.base_url}/v1/models answered HTTP "
                             f"{reply.status_code}; {hint}")
        self._pick_model(reply)
        self._client = client
        self._slots = asyncio.Semaphore(self.config.max_concurrency)
        self._metrics_at_start = await self._read_metrics()
        if self._metrics_at_start is not None:
            self._gauges = self._metrics_at_start
            if self.config.metrics_interval_s > 0:
                self._poller = asyncio.create_task(self._poll_metrics())

    async def close(self) -> None:
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def probe(self) -> bool:
        if self._client is None:
            return False
        try:
            return (await self._client.get("/v1/models")).status_code == 200
        except httpx.HTTPError:
            return False

    # ---- router view -------------------------------------------------------------------
    def tokenize(self, request: EngineRequest) -> list[int]:
        return []

    def cached_prefix_len(self, tokens: list[int], model: str | None = None) -> int:
        return 0

    @property
    def num_waiting(self) -> int:
        """Requests the server holds but does not run yet (its last ``/metrics`` read;
        0 when it exports no such gauge)."""
        return int(self._gauges.get("vllm:num_requests_waiting", 0))

    def kv_usage(self) -> float | None:
        """Fraction of the server's KV cache in use (last read), None when unknown."""
        for name in ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"):
            if name in self._gauges:
                return self._gauges[name]
        return None

    def stats(self) -> RemoteStats:
        return replace(self._stats)

    async def refresh_server_metrics(self) -> PrefixCacheCounters | None:
        """Read the server's prefix-cache counters (deltas since ``start()``) into ``stats()``.

        Returns None when the server exports none. If several engines share one server,
        each sees the whole server's counters.
        """
        now = await self._read_metrics()
        counters = None if now is None else _counters(self._metrics_at_start or {}, now)
        self._stats.server_prefix_cache = counters
        if now is not None:
            self._gauges = now
        return counters

    async def _poll_metrics(self) -> None:
        while self._client is not None:
            await asyncio.sleep(self.config.metrics_interval_s)
            now = await self._read_metrics()
            if now is not None:
                self._gauges = now

    # ---- calls ---------------------------------------------------------------------------
    async def generate(self, request: EngineRequest) -> Completion:
        client, slots = self._client, self._slots
        if client is None or slots is None:
            raise EngineError(f"engine {self.engine_id} is not started")
        path, body = self._request_body(request)
        queued = time.perf_counter()
        async with slots:
            started = time.perf_counter()
            try:
                reply = await self._with_retries(lambda: client.post(path, json=body))
            except asyncio.CancelledError:
                self._stats.num_cancelled += 1     # httpx closes the connection
                raise
            except httpx.HTTPError as exc:
                self._stats.num_failures += 1
                raise EngineError(f"engine {self.engine_id}: {self.config.base_url}{path} "
                                  f"failed: {type(exc).__name__}: {exc}") from exc
        finished = time.perf_counter()
        completion = self._completion(request, path, reply)
        completion.usage.queue_s, completion.usage.service_s = started - queued, finished - started
        return completion

    def _request_body(self, request: EngineRequest) -> tuple[str, dict[str, Any]]:
        p = request.params
        # A request naming a model (a workflow's model knob) overrides the engine's.
        body: dict[str, Any] = {"model": request.model or self.model,
                                "max_tokens": p.max_tokens,
                                "temperature": p.temperature, "top_p": p.top_p}
        if p.stop:
            body["stop"] = list(p.stop)
        if p.seed is not None:
            body["seed"] = p.seed
        if request.messages is not None and self.config.use_chat:
            return "/v1/chat/completions", {**body, "messages": request.messages}
        if request.messages is not None:
            lines = [f"{m.get('role', '')}: {m.get('content', '')}" for m in request.messages]
            prompt: Any = "\n".join(lines + ["assistant:"])
        else:
            prompt = request.prompt if request.prompt is not None else list(request.prompt_tokens)
        if not prompt:
            raise EngineError(f"engine {self.engine_id}: call {request.request_id} has no prompt")
        return "/v1/completions", {**body, "prompt": prompt}

    def _completion(self, request: EngineRequest, path: str, reply: httpx.Response) -> Completion:
        where = f"engine {self.engine_id}: {self.config.base_url}{path}"
        if reply.status_code in (400, 413, 422):
            # the server refused the request itself (vLLM, SGLang and llama.cpp answer a
            # prompt over the context window so): the engine is healthy, and every engine
            # like it would refuse it too
            raise request_error(f"{where} refused the request (HTTP {reply.status_code})",
                                reply.text[:2000])
        if reply.status_code != 200:
            self._stats.num_failures += 1
            raise EngineError(f"{where} answered HTTP {reply.status_code}: {reply.text[:300]}")
        try:
            data = reply.json()
            choice = data["choices"][0]
            text = choice["message"]["content"] if "message" in choice else choice["text"]
            usage = _usage(data.get("usage") or {}, len(request.prompt_tokens))
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            self._stats.num_failures += 1
            raise EngineError(f"{where} sent a malformed response ({exc!r}): "
                              f"{reply.text[:300]}") from None
        self._count(usage)
        return Completion(request.request_id, text or "", usage, self.engine_id,
                          choice.get("finish_reason") or "stop")

    # ---- helpers ---------------------------------------------------------------------------
    def _make_client(self) -> httpx.AsyncClient:
        cfg = self.config
        headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
        timeout = httpx.Timeout(cfg.read_timeout_s, connect=cfg.connect_timeout_s)
        limits = httpx.Limits(max_connections=cfg.max_concurrency + 2)
        return httpx.AsyncClient(base_url=cfg.base_url, headers=headers, timeout=timeout,
                                 limits=limits, transport=self._transport)

    async def _with_retries(self, send: Callable[[], Awaitable[httpx.Response]]
                            ) -> httpx.Response:
        for attempt in range(self.config.max_retries + 1):
            try:
                return await send()
            except _RETRYABLE:
                if attempt == self.config.max_retries:
                    raise
                self._stats.num_retries += 1
                await asyncio.sleep(self.config.retry_backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    def _pick_model(self, reply: httpx.Response) -> None:
        try:
            served = [m["id"] for m in reply.json().get("data", [])]
        except (ValueError, KeyError, TypeError, AttributeError):
            served = []
        if not self.model:
            if not served:
                raise ValueError(f"{self.config.base_url}/v1/models lists no model; set model")
            self.model = served[0]
        elif served and self.model not in served:
            log.warning("engine %s: model %r is not among %s served at %s", self.engine_id,
                        self.model, served, self.config.base_url)

    async def _read_metrics(self) -> dict[str, float] | None:
        if self._client is None:
            return None
        try:
            reply = await self._client.get("/metrics")
        except httpx.HTTPError:
            return None
        if reply.status_code != 200:
            return None
        metrics = parse_prometheus(reply.text)
        return metrics if any(k.startswith("vllm:") for k in metrics) else None

    def _count(self, usage: Usage) -> None:
        self._stats.num_calls += 1
        self._stats.num_prompt_tokens += usage.prompt_tokens
        if usage.cached_prompt_tokens is not None:
            self._stats.num_calls_with_cache_info += 1
            self._stats.num_cached_prompt_tokens += usage.cached_prompt_tokens


_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_prometheus(text: str) -> dict[str, float]:
    """Prometheus text format → {metric name: value summed over label sets}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        out[match.group(1)] = out.get(match.group(1), 0.0) + value
    return out


def _counters(before: dict[str, float], now: dict[str, float]) -> PrefixCacheCounters:
    def delta(name: str) -> float | None:
        key = next((k for k in (f"{name}_total", name) if k in now), None)
        return None if key is None else now[key] - before.get(key, 0.0)

    hits, queries = delta("vllm:prefix_cache_hits"), delta("vllm:prefix_cache_queries")
    rate = now.get("vllm:gpu_prefix_cache_hit_rate")
    if hits is not None and queries:
        rate = hits / queries
    return PrefixCacheCounters(hits, queries, rate)


def _usage(raw: dict[str, Any], fallback_prompt_tokens: int) -> Usage:
    details = raw.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens")
    return Usage(prompt_tokens=int(raw.get("prompt_tokens", fallback_prompt_tokens)),
                 cached_prompt_tokens=None if cached is None else int(cached),
                 output_tokens=int(raw.get("completion_tokens", 0)))

"""The zero-cost engine: answers every call at once with a fixed text.

It exists to measure what Cortex itself costs (control-plane overhead per
stage call) and to test the server without a model. Usage stays honest: the
prompt is counted with a byte-level tokenizer (one token per UTF-8 byte), the
engine keeps no cache (``cached_prompt_tokens=0``), the output is the fixed
text cut to ``max_tokens`` bytes, and ``service_s`` is the time actually spent.
An optional ``delay_ms`` lets tests keep calls in flight (cancellation,
graceful shutdown, full queues).

Config (``engines:`` entry): ``{backend: null, count: 2, text: "...", delay_ms: 0,
max_concurrency: 1024}``.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from cortex.core import Completion, EngineRequest, Usage
from cortex.engine.base import BaseEngine


@dataclass(frozen=True, slots=True)
class NullConfig:
    """Args:
        text: the completion every call returns.
        delay_ms: time each call takes (0: returns without yielding to the event loop).
        max_concurrency: calls one engine serves at once.
        model: reported model name.
    """

    text: str = "SELECT 1;"
    delay_ms: float = 0.0
    max_concurrency: int = 1024
    model: str = "null"

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise TypeError(f"text must be a string, got {self.text!r}")
        if not isinstance(self.delay_ms, (int, float)) or self.delay_ms < 0:
            raise ValueError(f"delay_ms must be a number >= 0, got {self.delay_ms!r}")
        if not isinstance(self.max_concurrency, int) or self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be an integer >= 1, "
                             f"got {self.max_concurrency!r}")


class NullEngine(BaseEngine):
    """A ``BaseEngine`` that does no model work (see the module docstring)."""

    def __init__(self, engine_id: str, config: NullConfig | None = None) -> None:
        self.engine_id = engine_id
        self.config = config or NullConfig()
        self.model = self.config.model
        self.max_concurrency = self.config.max_concurrency
        self.num_calls = 0
        self.num_cancelled = 0
        self._output = list(self.config.text.encode())

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def tokenize(self, request: EngineRequest) -> list[int]:
        return list(prompt_text(request).encode())

    def cached_prefix_len(self, tokens: list[int], model: str | None = None) -> int:
        return 0  # no cache: nothing is ever served from one

    async def generate(self, request: EngineRequest) -> Completion:
        started = time.perf_counter()
        self.num_calls += 1
        if self.config.delay_ms:
            try:
                await asyncio.sleep(self.config.delay_ms / 1000.0)
            except asyncio.CancelledError:
                self.num_cancelled += 1
                raise
        prompt_tokens = len(request.prompt_tokens) or len(self.tokenize(request))
        output = self._output[:request.params.max_tokens]
        usage = Usage(prompt_tokens=prompt_tokens, cached_prompt_tokens=0,
                      output_tokens=len(output), service_s=time.perf_counter() - started)
        finish = "length" if len(output) < len(self._output) else "stop"
        return Completion(request.request_id, bytes(output).decode(errors="ignore"), usage,
                          self.engine_id, finish_reason=finish)


def prompt_text(request: EngineRequest) -> str:
    """The request's prompt as one string (chat turns as ``role: content`` lines)."""
    if request.messages is None:
        return request.prompt or ""
    return "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in request.messages)


def null_engine(engine_id: str, spec: dict[str, Any]) -> BaseEngine:
    """The ``BACKENDS`` factory: a ``NullEngine`` from an ``engines:`` config entry."""
    options = {k: v for k, v in spec.items() if k not in ("backend", "count")}
    return NullEngine(engine_id, NullConfig(**options))

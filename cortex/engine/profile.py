"""Measure the embedded llama.cpp engine on this machine; calibrate the simulator.

``profile_llamacpp()`` returns ``{"engine_profile": {...}, "measurements": {...},
"machine": {...}}``. ``engine_profile`` holds exactly the ``SimEngineConfig``
keys (``SimEngineConfig.from_profile`` reads the file as is); ``measurements``
holds the raw figures they come from. Everything is measured through
``LlamaCppEngine`` (what Cortex really pays) except the KV snapshot size and
restore cost, read on a bare ``llama_cpp.Llama``, and the bare-call baseline.

Where each simulator key comes from:

* ``prefill_s_per_token``: slope of a line through cold calls (1 output token) of
  64..``prefix_tokens`` prompt tokens; ``prefill_overhead_s``: a call whose prompt is in
  the live context but for its last token, less that token's prefill;
* ``decode_base_s``: extra time per output token (33 vs 1 output tokens, same prompt);
  ``decode_per_seq_s`` = 0 and ``max_num_seqs`` = 1 (one sequence, no batching);
* ``kv_capacity_tokens``: ``cache_capacity_bytes`` / KV snapshot bytes per token;
* ``cached_prefix_load_s_per_token``: snapshot restore time / its tokens.

Cold prompts start with a token never used before, so no cache can serve them. Each
timing is the minimum over ``repeats`` runs (other load on the machine only adds time);
``machine.load_avg`` says how busy the machine was.
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import itertools
import json
import os
import statistics
import time
from typing import Any

from cortex.core import EngineRequest, SamplingParams
from cortex.engine.llamacpp import LlamaCppConfig, LlamaCppEngine
from cortex.engine.models import resolve_model_path

SCHEMA_LINE = ("CREATE TABLE {t} (id INTEGER PRIMARY KEY, name TEXT, region TEXT, "
               "amount REAL, created_at TEXT);\n")
TABLES = ["orders", "customers", "products", "shipments", "invoices", "employees", "stores",
          "suppliers", "returns", "payments", "regions", "categories", "warehouses", "carts"]
QUESTIONS = ("List every table and explain what each one stores, in detail.",
             "Write ten different SQL queries over this schema and explain each one.")


def profile_llamacpp(model: str = "smollm2-135m", cache_mb: float = 64.0, repeats: int = 3,
                     prefix_tokens: int = 400, output_tokens: int = 32,
                     block_size: int = 16) -> dict[str, Any]:
    """Run every measurement (about a minute on one core per engine) and return the profile.

    Raises:
        ValueError: bad sizes, or the model cannot be found or loaded.
    """
    if prefix_tokens < 128 or output_tokens < 2 or repeats < 1:
        raise ValueError("profile needs prefix_tokens >= 128, output_tokens >= 2, repeats >= 1")
    return asyncio.run(_Profiler(model, int(cache_mb * 2**20), repeats, prefix_tokens,
                                 output_tokens, block_size).run())


class _Profiler:
    def __init__(self, model: str, cache_bytes: int, repeats: int, prefix_tokens: int,
                 output_tokens: int, block_size: int) -> None:
        self.config = LlamaCppConfig(model=model, cache_capacity_bytes=cache_bytes)
        self.repeats, self.prefix_tokens = repeats, prefix_tokens
        self.output_tokens, self.block_size = output_tokens, block_size
        self.fresh_ids = itertools.count(1000)     # leading tokens never seen before
        self.m: dict[str, Any] = {}

    async def run(self) -> dict[str, Any]:
        load_before = os.getloadavg()[0]
        engine = LlamaCppEngine("profile-a", self.config)
        await engine.start()
        try:
            system = self._system_text(engine)
            base = engine.tokenize(EngineRequest("b", prompt=system * 2))
            await self._prefill_decode(engine, base)
            await self._cold_and_cached(engine, system)
            self._snapshots(base)
            await self._overhead(engine, base)
            await self._parallel(engine, base)
        finally:
            await engine.close()
        return {"engine_profile": self._engine_profile(), "measurements": self.m,
                "machine": {"cpus": os.cpu_count(), "model": self.config.model,
                            "load_avg": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                            "n_threads": self.config.n_threads,
                            "n_threads_batch": self.config.n_threads_batch,
                            "prefill_chunk_tokens": self.config.prefill_chunk_tokens,
                            "llama_cpp_python": _llama_version()}}

    def _system_text(self, engine: LlamaCppEngine) -> str:
        lines = ["You are an expert SQLite analyst. Answer with one SELECT query.\n"]
        for table in itertools.cycle(TABLES):
            text = "".join(lines)
            if len(engine.tokenize(EngineRequest("s", prompt=text))) >= self.prefix_tokens:
                return text
            lines.append(SCHEMA_LINE.format(t=f"{table}_{len(lines)}"))
        raise AssertionError("unreachable")

    def _cold(self, base: list[int], n: int) -> list[int]:
        return [next(self.fresh_ids)] + base[:n - 1]

    async def _call(self, engine: LlamaCppEngine, tokens: list[int], max_tokens: int
                    ) -> tuple[float, Any]:
        request = EngineRequest("p", prompt_tokens=tokens,
                                params=SamplingParams(max_tokens=max_tokens))
        started = time.perf_counter()
        completion = await engine.generate(request)
        return time.perf_counter() - started, completion

    async def _prefill_decode(self, engine: LlamaCppEngine, base: list[int]) -> None:
        await self._call(engine, self._cold(base, 32), 1)              # warm-up
        points = []
        for n in sorted({64, 128, 256, self.prefix_tokens}):
            runs = [await self._call(engine, self._cold(base, n), 1) for _ in range(self.repeats)]
            points.append((n, min(done.usage.service_s for _, done in runs)))
        slope, intercept = _fit(points)
        prompt = self._cold(base, self.prefix_tokens)
        await self._call(engine, prompt, 1)                            # now in the live context
        steps, shorts = [], []
        for _ in range(self.repeats):        # all but the last prompt token in the context
            long_s, long = await self._call(engine, prompt, self.output_tokens + 1)
            short_s, _ = await self._call(engine, prompt, 1)
            steps.append((long_s - short_s) / max(1, long.usage.output_tokens - 1))
            shorts.append(short_s)
        self.m.update(prefill_s_per_token=slope, prefill_tokens_per_s=1 / slope,
                      prefill_fit_intercept_s=intercept, prefill_points=points,
                      prefill_overhead_s=max(0.0, min(shorts) - slope),
                      decode_s_per_token=min(steps), decode_tokens_per_s=1 / min(steps))

    async def _cold_and_cached(self, engine: LlamaCppEngine, system: str) -> None:
        """Cold calls, and calls sharing a cold call's system prompt (another question),
        interleaved so each of those restores a snapshot (the live context holds another)."""
        words = ["Alpha", "Bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Golf", "Hotel"]
        words = [words[i % len(words)] + str(i // len(words)) for i in range(self.repeats)]
        order = [("cold", words[0])] + [
            step for prev, word in itertools.pairwise(words) for step in
            (("cold", word), ("cached", prev))] + [("cached", words[-1])]
        runs: dict[str, list[tuple[float, Any]]] = {"cold": [], "cached": []}
        for kind, word in order:
            request = EngineRequest(kind, messages=[
                {"role": "system", "content": f"{word}. {system}"},
                {"role": "user", "content": QUESTIONS[kind == "cached"]}],
                params=SamplingParams(max_tokens=self.output_tokens))
            started = time.perf_counter()
            done = await engine.generate(request)
            runs[kind].append((time.perf_counter() - started, done.usage))
        for kind, results in runs.items():
            self.m[f"{kind}_latency_s"] = min(s for s, _ in results)
            for field in ("prompt_tokens", "cached_prompt_tokens", "output_tokens"):
                self.m[f"{kind}_{field}"] = statistics.median(getattr(u, field) for _, u in results)

    def _snapshots(self, base: list[int]) -> None:
        import llama_cpp

        llama = _bare_llama(self.config)
        sizes, restore = {}, []
        for n in (64, self.prefix_tokens):
            llama.n_tokens = 0
            llama.eval(base[:n])
            sizes[n] = int(llama_cpp.llama_state_seq_get_size(llama.ctx, 0))
        data = (ctypes.c_uint8 * sizes[self.prefix_tokens])()
        llama_cpp.llama_state_seq_get_data(llama.ctx, data, len(data), 0)
        for _ in range(max(3, self.repeats)):
            llama.n_tokens = 0
            llama.eval(base[-8:])                      # something else in the context
            started = time.perf_counter()
            llama_cpp.llama_state_seq_set_data(llama.ctx, data, len(data), 0)
            restore.append(time.perf_counter() - started)
        llama.close()
        per_token = (sizes[self.prefix_tokens] - sizes[64]) / (self.prefix_tokens - 64)
        self.m.update(state_bytes_per_token=per_token,
                      state_bytes_fixed=sizes[64] - 64 * per_token,
                      restore_s_per_token=min(restore) / self.prefix_tokens,
                      cache_capacity_bytes=self.config.cache_capacity_bytes,
                      cache_capacity_tokens=int(self.config.cache_capacity_bytes // per_token))

    async def _overhead(self, engine: LlamaCppEngine, base: list[int]) -> None:
        llama = _bare_llama(self.config)
        bare, ours, outputs = [], [], set()
        for _ in range(self.repeats):
            tokens = self._cold(base, self.prefix_tokens)
            started = time.perf_counter()
            reply = llama.create_completion(tokens, max_tokens=self.output_tokens,
                                            temperature=0.0)
            bare.append(time.perf_counter() - started)
            seconds, done = await self._call(engine, tokens, self.output_tokens)
            ours.append(seconds)
            outputs.add((reply["usage"]["completion_tokens"], done.usage.output_tokens))
        llama.close()
        b, o = min(bare), min(ours)
        self.m.update(bare_call_s=b, cortex_call_s=o, cortex_overhead_frac=(o - b) / b,
                      overhead_output_tokens=sorted(outputs))

    async def _parallel(self, engine: LlamaCppEngine, base: list[int]) -> None:
        other = LlamaCppEngine("profile-b", self.config)
        await other.start()
        try:
            async def work(e: LlamaCppEngine) -> None:
                for _ in range(2):
                    await self._call(e, self._cold(base, self.prefix_tokens), self.output_tokens)

            started = time.perf_counter()
            await work(engine)
            one = time.perf_counter() - started
            started = time.perf_counter()
            await asyncio.gather(work(engine), work(other))
            two = time.perf_counter() - started
        finally:
            await other.close()
        self.m.update(one_engine_wall_s=one, two_engines_wall_s=two,
                      parallel_throughput_ratio=2 * one / two)

    def _engine_profile(self) -> dict[str, Any]:
        m = self.m
        return {"prefill_s_per_token": m["prefill_s_per_token"],
                "prefill_overhead_s": m["prefill_overhead_s"],
                "decode_base_s": m["decode_s_per_token"], "decode_per_seq_s": 0.0,
                "kv_capacity_tokens": max(self.block_size, m["cache_capacity_tokens"]),
                "block_size": self.block_size, "max_num_seqs": 1,
                "cached_prefix_load_s_per_token": m["restore_s_per_token"]}


def _bare_llama(config: LlamaCppConfig) -> Any:
    import llama_cpp

    return llama_cpp.Llama(model_path=str(resolve_model_path(config.model)), n_ctx=config.n_ctx,
                           n_threads=config.n_threads, n_threads_batch=config.n_threads_batch,
                           verbose=False)


def _fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares line through (tokens, seconds): (slope, intercept)."""
    xs, ys = [float(x) for x, _ in points], [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx


def _llama_version() -> str:
    import llama_cpp

    return str(getattr(llama_cpp, "__version__", "unknown"))


def format_table(profile: dict[str, Any]) -> str:
    """A readable two-column table of the profile."""
    rows = [("simulator profile", "")] + list(profile["engine_profile"].items())
    rows += [("measurements", "")] + [(k, v) for k, v in profile["measurements"].items()
                                      if k != "prefill_points"]
    rows += [("machine", "")] + list(profile["machine"].items())
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {_fmt(v)}" if v != "" else f"\n[{k}]" for k, v in rows)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    """``python -m cortex.engine.profile [--out profile.json] ...`` (the flags of
    ``cortex profile``)."""
    from cortex.cli_profile import add_profile_arguments

    p = argparse.ArgumentParser(prog="cortex profile", description=__doc__.splitlines()[0])
    add_profile_arguments(p)
    return run(p.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Profile with parsed flags, print the table, write ``--out``."""
    profile = profile_llamacpp(args.model, args.cache_mb, args.repeats, args.prefix_tokens,
                               args.output_tokens, args.block_size)
    print(format_table(profile))
    if args.out:
        args.out.write_text(json.dumps(profile, indent=2))
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

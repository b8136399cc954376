"""SimEngine: exact timings from the cost model, batching, queueing, cancellation."""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from cortex.allocator.signals import kv_live, kv_usage
from cortex.core import EngineRequest, SamplingParams
from cortex.engine.sim import SimEngine, SimEngineConfig, SimFinished

# Round numbers so expected times can be written by hand.
CFG: dict[str, Any] = {"prefill_s_per_token": 0.001, "prefill_overhead_s": 0.01,
                       "decode_base_s": 0.02, "decode_per_seq_s": 0.005,
                       "kv_capacity_tokens": 1600, "block_size": 16, "max_num_seqs": 4}


def make_engine(**overrides: Any) -> SimEngine:
    return SimEngine("e0", SimEngineConfig(**{**CFG, **overrides}))


def req(rid: str, prompt_len: int, out: int | None, max_tokens: int = 64,
        family: int = 0) -> EngineRequest:
    tokens = [family * 10_000 + i for i in range(prompt_len)]
    return EngineRequest(rid, prompt_tokens=tokens, params=SamplingParams(max_tokens=max_tokens),
                         sim_output_tokens=out)


def drain(engine: SimEngine, until: float = float("inf")) -> list[SimFinished]:
    """Advance exactly at the engine's event times, as the simulator does."""
    done: list[SimFinished] = []
    while (t := engine.next_event_time()) is not None and t <= until:
        done += engine.advance(t)
        engine.check_integrity()
    return done


def test_single_request_timing_and_usage() -> None:
    engine = make_engine()
    engine.submit(req("a", 100, 5), 0.0)
    assert engine.next_event_time() == pytest.approx(0.11)  # 0.01 + 100 * 0.001
    assert engine.advance(0.11) == []
    assert engine.next_event_time() == pytest.approx(0.21)  # + 4 steps * 0.025
    assert engine.advance(0.2) == []
    [done] = engine.advance(engine.next_event_time())  # type: ignore[arg-type]
    assert done.finish_time == pytest.approx(0.21)
    usage = done.completion.usage
    assert (usage.prompt_tokens, usage.cached_prompt_tokens, usage.output_tokens) == (100, 0, 5)
    assert usage.queue_s == 0.0 and usage.service_s == pytest.approx(0.21)
    assert done.completion.engine_id == "e0" and done.completion.finish_reason == "stop"
    assert engine.next_event_time() is None
    assert engine.stats().busy_s == pytest.approx(0.21)


def test_repeated_prompt_hits_cache_capped_at_prompt_minus_one() -> None:
    engine = make_engine()
    engine.submit(req("a", 96, 1), 0.0)
    [first] = drain(engine)
    assert first.finish_time == pytest.approx(0.106)  # one output token: prefill only
    assert engine.cached_prefix_len(req("x", 96, 1).prompt_tokens) == 96
    engine.submit(req("b", 96, 1), 1.0)
    [second] = drain(engine)
    assert second.completion.usage.cached_prompt_tokens == 95
    assert second.finish_time == pytest.approx(1.0 + 0.01 + 0.001)
    stats = engine.stats()
    assert (stats.prompt_tokens, stats.cached_prompt_tokens, stats.num_finished) == (192, 95, 2)


def test_cached_prefix_load_cost_is_charged() -> None:
    engine = make_engine(cached_prefix_load_s_per_token=0.0001)
    engine.submit(req("a", 100, 1), 0.0)
    drain(engine)
    engine.submit(req("b", 100, 1), 1.0)
    [done] = drain(engine)
    assert done.finish_time == pytest.approx(1.0 + 0.01 + 4 * 0.001 + 96 * 0.0001)


def test_two_requests_share_one_prefill_then_batch() -> None:
    engine = make_engine()
    engine.submit(req("a", 100, 3, family=1), 0.0)
    engine.submit(req("b", 100, 5, family=2), 0.0)
    done = drain(engine)
    assert [d.completion.request_id for d in done] == ["a", "b"]
    assert done[0].finish_time == pytest.approx(0.21 + 2 * 0.03)        # batch of 2
    assert done[1].finish_time == pytest.approx(0.27 + 2 * 0.025)       # then alone
    assert done[1].completion.usage.service_s == pytest.approx(0.32)


def test_submit_mid_decode_starts_at_next_step_boundary() -> None:
    engine = make_engine()
    engine.submit(req("a", 100, 11, family=1), 0.0)
    assert engine.advance(0.11) == []                   # prefill done, 10 decode steps left
    engine.submit(req("b", 50, 2, family=2), 0.17)      # 2.4 steps into the stretch
    assert engine.next_event_time() == pytest.approx(0.185)
    done = drain(engine)
    b, a = done
    # prefill of b at 0.185: 0.01 + 50 * 0.001 + one decode step for a (0.025) -> 0.27
    assert b.finish_time == pytest.approx(0.27 + 0.03)
    assert b.completion.usage.queue_s == pytest.approx(0.015)
    # a: 1 + 3 + 1 tokens by 0.27, 1 more in the batch of 2, then 5 alone
    assert a.finish_time == pytest.approx(0.30 + 5 * 0.025)


def test_submit_exactly_at_a_step_boundary_starts_there() -> None:
    engine = make_engine()
    engine.submit(req("a", 100, 11, family=1), 0.0)
    engine.advance(0.11)
    boundary = 0.11 + 2 * 0.025
    engine.submit(req("b", 50, 2, family=2), boundary)  # prefill of b starts right away
    assert engine.next_event_time() == pytest.approx(boundary + 0.01 + 0.05 + 0.025)
    b, _ = drain(engine)
    assert b.completion.usage.queue_s == 0.0


def test_request_waits_while_kv_is_full() -> None:
    engine = make_engine()
    engine.submit(req("a", 800, 3, max_tokens=800, family=1), 0.0)   # all 100 blocks
    engine.submit(req("b", 100, 2, family=2), 0.1)
    assert (engine.num_running, engine.num_waiting) == (1, 1)
    a, b = drain(engine)
    a_end = 0.01 + 0.8 + 2 * 0.025
    assert a.finish_time == pytest.approx(a_end)
    assert b.completion.usage.queue_s == pytest.approx(a_end - 0.1)
    assert b.finish_time == pytest.approx(a_end + 0.11 + 0.025)


def test_request_waits_for_a_batch_slot() -> None:
    engine = make_engine(max_num_seqs=1)
    engine.submit(req("a", 16, 2, family=1), 0.0)
    engine.submit(req("b", 16, 2, family=2), 0.0)
    a, b = drain(engine)
    assert b.completion.usage.queue_s == pytest.approx(a.finish_time)


def test_cancel_running_frees_blocks_and_shrinks_the_batch() -> None:
    engine = make_engine()
    engine.submit(req("a", 100, 11, family=1), 0.0)
    engine.submit(req("b", 100, 11, family=2), 0.0)
    engine.advance(0.21)                                 # joint prefill done
    assert engine.cancel("b", 0.25)                      # 1.33 steps of 0.03 in
    assert engine.cache.size_info().in_use == 11         # a's 100 + 64 tokens
    [a] = drain(engine)
    # two steps at batch 2 (the cut is at the boundary after 0.25), then 8 alone
    assert a.finish_time == pytest.approx(0.21 + 2 * 0.03 + 8 * 0.025)
    assert engine.cache.size_info().in_use == 0
    assert engine.cached_prefix_len(req("x", 100, 1, family=2).prompt_tokens) == 96
    assert not engine.cancel("b", 1.0)
    assert engine.stats().num_cancelled == 1


def test_cancel_waiting_and_during_prefill() -> None:
    engine = make_engine(max_num_seqs=1)
    engine.submit(req("a", 100, 3, family=1), 0.0)
    engine.submit(req("b", 100, 3, family=2), 0.0)
    assert engine.cancel("b", 0.05)                      # waiting
    assert engine.cancel("a", 0.05)                      # mid prefill
    assert drain(engine) == []
    assert engine.next_event_time() is None
    assert engine.cache.size_info().in_use == 0
    engine.check_integrity()


def test_cancelling_a_blocking_queue_head_admits_the_next_at_a_step_boundary() -> None:
    engine = make_engine()
    engine.submit(req("x", 400, 20, max_tokens=400, family=1), 0.0)  # 50 of 100 blocks
    engine.advance(0.41)                                                # x decodes
    engine.submit(req("a", 500, 1, max_tokens=460, family=2), 0.5)      # 60 blocks: waits
    engine.submit(req("b", 16, 1, max_tokens=16, family=3), 0.5)        # FCFS: behind a
    assert engine.num_waiting == 2
    assert engine.cancel("a", 0.52)
    assert engine.next_event_time() == pytest.approx(0.535)             # 5 steps after 0.41
    b, x = drain(engine)
    assert b.completion.usage.queue_s == pytest.approx(0.035)
    assert b.finish_time == pytest.approx(0.535 + 0.01 + 0.016 + 0.025)
    assert x.finish_time == pytest.approx(0.586 + 13 * 0.025)          # 7 tokens by 0.586


def test_cached_prefix_len_sees_evictions() -> None:
    engine = make_engine(kv_capacity_tokens=320)                      # 20 blocks
    tokens = req("x", 160, 1, family=1).prompt_tokens
    assert engine.cached_prefix_len(tokens) == 0
    engine.submit(req("a", 160, 1, max_tokens=1, family=1), 0.0)
    drain(engine)
    assert engine.cached_prefix_len(tokens) == 160                    # registration seen
    engine.submit(req("b", 300, 1, max_tokens=1, family=2), 1.0)    # needs 19 blocks
    drain(engine)
    assert engine.cached_prefix_len(tokens) == 16                     # 9 of 10 evicted
    assert engine.stats().num_evictions == 9
    # b's prompt again, with room for 20 output tokens: all prompt blocks hit, nothing new
    # is registered, and the 2 new blocks come from the free list and a's last block.
    engine.submit(req("c", 300, 1, max_tokens=20, family=2), 2.0)
    assert engine.cached_prefix_len(tokens) == 0                      # eviction alone seen
    assert engine.stats().num_evictions == 10


def test_output_tokens_default_to_max_tokens_and_are_capped() -> None:
    engine = make_engine()
    engine.submit(req("a", 16, None, max_tokens=3, family=1), 0.0)
    engine.submit(req("b", 16, 50, max_tokens=2, family=2), 0.0)
    a, b = sorted(drain(engine), key=lambda d: d.completion.request_id)
    assert (a.completion.usage.output_tokens, a.completion.finish_reason) == (3, "length")
    assert (b.completion.usage.output_tokens, b.completion.finish_reason) == (2, "length")


def test_bad_submissions_are_refused() -> None:
    engine = make_engine()
    with pytest.raises(ValueError, match="kv_capacity_tokens"):
        engine.submit(req("big", 1600, 1, max_tokens=1), 0.0)
    engine.submit(req("a", 16, 2), 1.0)
    with pytest.raises(ValueError, match="already submitted"):
        engine.submit(req("a", 16, 2), 1.0)
    with pytest.raises(ValueError, match="backwards"):
        engine.advance(0.5)


def test_cached_prefix_len_memo_follows_the_list() -> None:
    engine = make_engine()
    engine.submit(req("a", 64, 1), 0.0)
    drain(engine)
    tokens = req("x", 64, 1).prompt_tokens
    assert engine.cached_prefix_len(tokens) == 64
    tokens.append(7)  # same list, new length: recomputed, not served stale
    tokens[0] = -1
    assert engine.cached_prefix_len(tokens) == 0
    assert engine.cached_prefix_len([], hashes=[]) == 0


def _random_run(seed: int) -> list[tuple[str, float, int, int | None, float, float]]:
    rng = random.Random(seed)
    engine = make_engine(kv_capacity_tokens=800)
    t, out, live = 0.0, [], []
    for i in range(150):
        t += rng.expovariate(20.0)
        out += drain(engine, until=t)
        if live and rng.random() < 0.1:
            engine.cancel(live.pop(rng.randrange(len(live))), t)
        engine.submit(req(f"r{i}", rng.randrange(1, 200), rng.randrange(0, 20),
                          family=rng.randrange(3)), t)
        live.append(f"r{i}")
        engine.check_integrity()
    out += drain(engine)
    stats = engine.stats()
    assert stats.num_finished + stats.num_cancelled == stats.num_submitted == 150
    assert stats.num_evictions > 0 and stats.cached_prompt_tokens > 0
    times = [d.finish_time for d in out]
    assert times == sorted(times)
    return [(d.completion.request_id, d.finish_time, d.completion.usage.output_tokens,
             d.completion.usage.cached_prompt_tokens, d.completion.usage.queue_s,
             d.completion.usage.service_s) for d in out]


def test_random_workload_is_consistent_and_deterministic() -> None:
    assert _random_run(3) == _random_run(3)
    assert _random_run(3) != _random_run(4)


def test_config_validation_and_profiles(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="prefill_s_per_token"):
        SimEngineConfig(prefill_s_per_token=-1.0)
    with pytest.raises(ValueError, match="max_num_seqs"):
        SimEngineConfig(max_num_seqs=0)
    with pytest.raises(ValueError, match="block_size"):
        SimEngineConfig(block_size=16.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="decode_base_s"):
        SimEngineConfig(decode_base_s="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kv_capacity_tokens"):
        SimEngineConfig(kv_capacity_tokens=8, block_size=16)
    cfg = SimEngineConfig.from_profile({"decode_base_s": 0.012, "max_num_seqs": 64})
    assert (cfg.decode_base_s, cfg.max_num_seqs) == (0.012, 64)
    path = tmp_path / "engine.json"
    path.write_text(json.dumps({"engine_profile": cfg.to_dict()}))
    assert SimEngineConfig.from_profile(path) == cfg
    path.write_text(json.dumps({"decode_base": 0.01}))
    with pytest.raises(ValueError, match=r"engine\.json.*decode_base"):
        SimEngineConfig.from_profile(path)
    for bad in ({"block_size": 0}, {"block_size": "16"}, [1, 2]):
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=r"engine\.json"):
            SimEngineConfig.from_profile(path)
    with pytest.raises(ValueError, match="cannot read"):
        SimEngineConfig.from_profile(tmp_path / "missing.json")


def test_allocator_signals_read_live_and_cached_kv_of_a_sim_engine() -> None:
    engine = make_engine()
    assert (kv_live(engine), kv_usage(engine)) == (0.0, 0.0)
    engine.submit(req("a", 800, 3, max_tokens=800, family=1), 0.0)   # all 100 blocks
    assert kv_live(engine) == 1.0 and kv_usage(engine) == 1.0
    drain(engine)
    assert kv_live(engine) == 0.0 and kv_usage(engine) > 0.0      # cached, not held

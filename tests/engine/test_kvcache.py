"""BlockPrefixCache: accounting, eviction, ref counts, integrity under random operations."""
from __future__ import annotations

import random

import pytest

from cortex.engine.kvcache import AllocResult, BlockPrefixCache, SizeInfo, block_hashes

BS = 4


def prompt(prefix: int, num_blocks: int, tail: int = 0) -> list[int]:
    """Tokens of family ``prefix``: ``num_blocks`` full blocks plus ``tail`` extra tokens."""
    return [prefix * 1000 + i for i in range(num_blocks * BS + tail)]


def alloc(cache: BlockPrefixCache, seq_id: str, tokens: list[int], reserve: int = 0
          ) -> AllocResult:
    return cache.allocate(seq_id, block_hashes(tokens, BS), len(tokens) + reserve)


def test_block_hashes_are_chained_and_skip_partial_blocks() -> None:
    a = block_hashes([1, 2, 3, 4, 5, 6, 7, 8, 9], BS)
    assert len(a) == 2
    assert block_hashes([1, 2, 3, 4, 5, 6, 7, 8], BS) == a
    # Same second block after a different first block: different hash.
    b = block_hashes([0, 2, 3, 4, 5, 6, 7, 8], BS)
    assert b[0] != a[0] and b[1] != a[1]
    assert block_hashes([1, 2, 3], BS) == []


def test_repeated_prefix_gets_cached() -> None:
    cache = BlockPrefixCache(16, BS)
    tokens = prompt(1, 3, tail=2)
    assert alloc(cache, "a", tokens, reserve=2) == AllocResult(0, 4)
    cache.deallocate("a")
    assert cache.match_prefix(block_hashes(tokens, BS)) == 3
    longer = tokens[:2 * BS] + [7] * (2 * BS)  # shares two blocks, then diverges
    assert cache.match_prefix(block_hashes(longer, BS)) == 2
    assert alloc(cache, "b", longer) == AllocResult(2, 2)
    cache.check_integrity()


def test_evicted_block_is_never_counted_cached_again() -> None:
    cache = BlockPrefixCache(4, BS)
    a = prompt(1, 2)
    alloc(cache, "a", a)
    cache.deallocate("a")
    assert cache.size_info() == SizeInfo(4, 2, 2, 0)
    alloc(cache, "b", prompt(2, 4))  # needs all four blocks: evicts a's two
    assert cache.num_evictions == 2
    assert cache.match_prefix(block_hashes(a, BS)) == 0
    cache.deallocate("b")
    cache.check_integrity()
    assert cache.match_prefix(block_hashes(a, BS)) == 0


def test_lru_evicts_least_recently_released_tail_first() -> None:
    cache = BlockPrefixCache(4, BS)
    a, b = prompt(1, 2), prompt(2, 2)
    alloc(cache, "a", a)
    alloc(cache, "b", b)
    cache.deallocate("a")
    cache.deallocate("b")
    alloc(cache, "c", prompt(3, 1))  # one eviction: a's tail block
    assert cache.match_prefix(block_hashes(a, BS)) == 1
    assert cache.match_prefix(block_hashes(b, BS)) == 2


def test_blocks_of_running_sequences_cannot_be_evicted() -> None:
    cache = BlockPrefixCache(4, BS)
    a = prompt(1, 3)
    alloc(cache, "a", a)
    big = prompt(2, 2)
    assert not cache.can_allocate(len(big), block_hashes(big, BS))
    with pytest.raises(RuntimeError, match="not enough KV blocks"):
        alloc(cache, "b", big)
    assert cache.match_prefix(block_hashes(a, BS)) == 3
    assert cache.num_evictions == 0
    cache.check_integrity()


def test_matched_evictable_blocks_are_not_counted_as_available() -> None:
    cache = BlockPrefixCache(4, BS)
    a = prompt(1, 2)
    alloc(cache, "a", a)
    cache.deallocate("a")  # 2 free, 2 evictable (a's)
    hashes = block_hashes(a, BS)
    assert not cache.can_allocate(5 * BS, hashes)  # 3 new blocks, only 2 not pinned
    assert cache.can_allocate(4 * BS, hashes)
    assert cache.allocate("b", hashes, 4 * BS) == AllocResult(2, 2)
    assert cache.num_evictions == 0
    cache.check_integrity()


def test_shared_blocks_are_ref_counted() -> None:
    cache = BlockPrefixCache(8, BS)
    tokens = prompt(1, 2)
    alloc(cache, "a", tokens, reserve=BS)
    assert alloc(cache, "b", tokens, reserve=BS) == AllocResult(2, 1)
    assert cache.size_info() == SizeInfo(8, 4, 0, 4)
    cache.deallocate("a")
    assert cache.size_info() == SizeInfo(8, 5, 0, 3)  # a's output block freed, prefix held
    cache.deallocate("b")
    assert cache.size_info() == SizeInfo(8, 6, 2, 0)
    cache.check_integrity()


def test_clear_forgets_prefixes_but_keeps_live_blocks() -> None:
    cache = BlockPrefixCache(8, BS)
    a, b = prompt(1, 2), prompt(2, 2)
    alloc(cache, "a", a)
    alloc(cache, "b", b)
    cache.deallocate("a")
    cache.clear()
    assert cache.match_prefix(block_hashes(a, BS)) == 0
    assert cache.match_prefix(block_hashes(b, BS)) == 0
    assert cache.size_info() == SizeInfo(8, 6, 0, 2)
    cache.deallocate("b")
    assert cache.size_info() == SizeInfo(8, 8, 0, 0)
    cache.check_integrity()


def test_bad_calls_are_refused() -> None:
    with pytest.raises(ValueError):
        BlockPrefixCache(0, BS)
    cache = BlockPrefixCache(8, BS)
    alloc(cache, "a", prompt(1, 1))
    with pytest.raises(ValueError, match="already holds"):
        alloc(cache, "a", prompt(1, 1))
    with pytest.raises(ValueError, match="exceed"):
        cache.allocate("b", block_hashes(prompt(1, 3), BS), BS)
    with pytest.raises(KeyError):
        cache.deallocate("nope")


def test_check_integrity_detects_corruption() -> None:
    cache = BlockPrefixCache(8, BS)
    alloc(cache, "a", prompt(1, 2))
    cache._ref[0] += 1  # a leaked reference
    with pytest.raises(AssertionError, match="ref"):
        cache.check_integrity()
    cache._ref[0] -= 1
    cache.check_integrity()
    cache._free.append(cache._free[-1])  # a block handed out twice
    with pytest.raises(AssertionError):
        cache.check_integrity()


@pytest.mark.parametrize("seed", range(5))
def test_random_operations_keep_invariants(seed: int) -> None:
    rng = random.Random(seed)
    cache = BlockPrefixCache(24, BS)
    live: list[str] = []
    for step in range(400):
        if live and (rng.random() < 0.45 or cache.size_info().free == 0):
            cache.deallocate(live.pop(rng.randrange(len(live))))
        else:
            tokens = prompt(rng.randrange(4), rng.randrange(0, 5), tail=rng.randrange(BS))
            hashes = block_hashes(tokens, BS)
            total = len(tokens) + rng.randrange(1, 2 * BS)
            before, evictions = set(cache._by_hash), cache.num_evictions
            if not cache.can_allocate(total, hashes):
                with pytest.raises(RuntimeError):
                    cache.allocate(f"s{step}", hashes, total)
                continue
            cached = cache.match_prefix(hashes)
            assert cache.allocate(f"s{step}", hashes, total).num_cached_blocks == cached
            live.append(f"s{step}")
            evicted = before - set(cache._by_hash)
            assert cache.num_evictions - evictions >= len(evicted)
            assert not evicted & set(cache._hash), "an evicted hash is still on a block"
            assert cache.match_prefix(list(evicted)[:1]) == 0
        cache.check_integrity()
        info = cache.size_info()
        assert info.free + info.evictable + info.in_use == info.total
    assert cache.num_evictions > 0  # the fuzz actually exercised eviction

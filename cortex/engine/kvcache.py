"""Block-level prefix cache with LRU eviction: the KV memory of one simulated engine.

Owner: exactly one ``SimEngine``; nothing else mutates it. Prompts are split into
full blocks of ``block_size`` tokens; block *i* is named by a chained hash of
block *i-1*'s hash and its own tokens, so a block matches only when the whole
prefix before it matches (vLLM's / SGLang's prefix caching).

Every block is in exactly one state:

* **free**: no sequence holds it and it carries no hash;
* **evictable**: no sequence holds it but it carries a hash, so a later prompt
  can reuse it; kept in LRU order of last release;
* **in use**: held by ``ref_count >= 1`` live sequences (with or without hash).

Allocation takes free blocks first, then evicts the least recently released
evictable block, forgetting its hash. A sequence reserves every block it will
ever need (prompt + maximum output) at admission, instead of vLLM's incremental
allocation with preemption: a running sequence can therefore never be
preempted, and the engine admits new work only when the reservation fits.
"""
from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any, NamedTuple

_ROOT_HASH = 0  # parent of the first block (hash(None) is not stable across runs before 3.12)


def block_hashes(tokens: list[int], block_size: int) -> list[int]:
    """Chained hashes of the full blocks of ``tokens`` (a trailing partial block has none).

    Deterministic across processes: only ints and tuples of ints are hashed.
    """
    hashes: list[int] = []
    parent = _ROOT_HASH
    for block in zip(*[iter(tokens)] * block_size):  # full blocks as tuples, tail dropped
        parent = hash((parent, block))
        hashes.append(parent)
    return hashes


def num_blocks_for(num_tokens: int, block_size: int) -> int:
    """Blocks needed to hold ``num_tokens`` tokens (ceiling division)."""
    return -(-num_tokens // block_size)


class HashMemo:
    """Block hashes of recently seen token lists, plus their last ``match_prefix`` answer.

    Keyed by list identity; an entry holds its list, so the id cannot be reused
    while the entry lives, and a changed length invalidates it. Callers must not
    mutate a token list in place after handing it over (prompts never are). Use
    one memo per cache: a remembered match is tagged with that cache's ``version``.

    Args:
        block_size: tokens per block.
        capacity: entries kept (oldest dropped first).
    """

    def __init__(self, block_size: int, capacity: int = 1024) -> None:
        self.block_size = block_size
        self.capacity = capacity
        self._entries: OrderedDict[int, list[Any]] = OrderedDict()

    def hashes(self, tokens: list[int]) -> list[int]:
        return self._entry(tokens)[2]

    def match_prefix(self, tokens: list[int], cache: BlockPrefixCache) -> int:
        """``cache.match_prefix(block_hashes(tokens))``, recomputed only when the
        cache's set of matchable hashes changed (``cache.version``)."""
        entry = self._entry(tokens)
        if entry[3] != cache.version:
            entry[3], entry[4] = cache.version, cache.match_prefix(entry[2])
        return entry[4]

    def _entry(self, tokens: list[int]) -> list[Any]:
        entry = self._entries.get(id(tokens))
        if entry is None or entry[0] is not tokens or entry[1] != len(tokens):
            # [tokens, length, hashes, cache version of the answer, matched blocks]
            entry = [tokens, len(tokens), block_hashes(tokens, self.block_size), -1, 0]
            self._entries[id(tokens)] = entry
            if len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return entry


class AllocResult(NamedTuple):
    num_cached_blocks: int  # leading prompt blocks reused from the cache
    num_new_blocks: int     # blocks taken from the free list or by eviction


class SizeInfo(NamedTuple):
    total: int
    free: int
    evictable: int
    in_use: int


class BlockPrefixCache:
    """Ref-counted KV blocks with a chained-hash prefix index and LRU eviction.

    Args:
        num_blocks: capacity in blocks (``kv_capacity_tokens // block_size``).
        block_size: tokens per block.

    Hash lists passed in must not be mutated afterwards: the last match is
    memoised by list identity.

    Raises:
        ValueError: non-positive ``num_blocks`` or ``block_size``.
    """

    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"BlockPrefixCache: num_blocks ({num_blocks}) and block_size "
                             f"({block_size}) must be >= 1")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.num_evictions = 0
        self.version = 0  # bumped whenever the set of matchable hashes changes
        self._ref = [0] * num_blocks
        self._hash: list[int | None] = [None] * num_blocks
        self._by_hash: dict[int, int] = {}
        self._free = list(range(num_blocks - 1, -1, -1))  # pop() hands out block 0 first
        self._evictable: OrderedDict[int, None] = OrderedDict()  # LRU first
        self._seqs: dict[str, list[int]] = {}
        self._last_match: tuple[Any, int, int, int] = (None, -1, 0, 0)

    # ---- queries -------------------------------------------------------------
    def match_prefix(self, hashes: list[int]) -> int:
        """Number of leading blocks of ``hashes`` held in the cache now. No side effects.

        Args:
            hashes: ``block_hashes(prompt, block_size)``.
        Returns:
            Leading cached blocks (multiply by ``block_size`` for tokens).
        """
        last = self._last_match  # can_allocate then allocate ask about the same list
        if last[0] is hashes and last[1] == self.version and last[2] == len(hashes):
            return last[3]
        by_hash = self._by_hash
        n = 0
        for h in hashes:
            if h not in by_hash:
                break
            n += 1
        self._last_match = (hashes, self.version, len(hashes), n)
        return n

    def can_allocate(self, num_tokens_total: int, hashes: list[int]) -> bool:
        """Whether ``allocate`` would succeed now.

        Args:
            num_tokens_total: prompt tokens plus reserved output tokens.
            hashes: the prompt's ``block_hashes``.
        Returns:
            True when the uncached blocks fit in free plus evictable blocks (not
            counting matched blocks that are themselves evictable).
        """
        matched = self.match_prefix(hashes)
        return self._fits(num_blocks_for(num_tokens_total, self.block_size) - matched,
                          hashes, matched)

    def _fits(self, num_new: int, hashes: list[int], matched: int) -> bool:
        available = len(self._free) + len(self._evictable)
        if num_new <= available - matched:  # fits even if every matched block is evictable
            return True
        if num_new > available:
            return False
        by_hash, ref = self._by_hash, self._ref
        pinned = sum(1 for h in hashes[:matched] if ref[by_hash[h]] == 0)
        return num_new <= available - pinned

    def size_info(self) -> SizeInfo:
        """Block counts by state; ``free + evictable + in_use == total``."""
        free, evictable = len(self._free), len(self._evictable)
        return SizeInfo(self.num_blocks, free, evictable, self.num_blocks - free - evictable)

    def seq_ids(self) -> list[str]:
        """Ids of the sequences that hold blocks."""
        return list(self._seqs)

    # ---- mutations -----------------------------------------------------------
    def allocate(self, seq_id: str, hashes: list[int], num_tokens_total: int) -> AllocResult:
        """Give ``seq_id`` every block it needs: the cached prefix, then new blocks.

        Matched blocks are acquired (ref_count + 1) before any eviction, so they
        cannot be evicted for this very allocation. New full prompt blocks are
        registered under their hash at once: like vLLM v1, a request admitted
        later (even in the same iteration) can reuse them.

        Args:
            seq_id: unique id of a sequence that holds no blocks yet.
            hashes: the prompt's ``block_hashes``.
            num_tokens_total: prompt tokens plus reserved output tokens.
        Returns:
            ``AllocResult(num_cached_blocks, num_new_blocks)``.
        Raises:
            ValueError: ``seq_id`` already holds blocks, or ``hashes`` has more
                blocks than ``num_tokens_total`` needs.
            RuntimeError: not enough blocks (call ``can_allocate`` first).
        """
        if seq_id in self._seqs:
            raise ValueError(f"sequence {seq_id!r} already holds blocks")
        total = num_blocks_for(num_tokens_total, self.block_size)
        if len(hashes) > total:
            raise ValueError(f"sequence {seq_id!r}: {len(hashes)} prompt blocks exceed the "
                             f"{total} blocks of {num_tokens_total} tokens")
        matched = self.match_prefix(hashes)
        if not self._fits(total - matched, hashes, matched):
            raise RuntimeError(f"sequence {seq_id!r}: not enough KV blocks "
                               f"({total} needed, {self.size_info()})")
        by_hash, ref, block_hash = self._by_hash, self._ref, self._hash
        blocks = [by_hash[h] for h in hashes[:matched]]
        for block in blocks:  # acquire before taking new blocks: never evict our own prefix
            if ref[block] == 0:
                del self._evictable[block]
            ref[block] += 1
        for i in range(matched, total):
            block = self._take()
            ref[block] = 1
            if i < len(hashes) and hashes[i] not in by_hash:
                block_hash[block] = hashes[i]
                by_hash[hashes[i]] = block
                self.version += 1
            blocks.append(block)
        self._seqs[seq_id] = blocks
        return AllocResult(matched, total - matched)

    def deallocate(self, seq_id: str) -> None:
        """Release ``seq_id``'s blocks. Hashed blocks stay cached (evictable), others free.

        Tail blocks are released first so that, among one sequence's blocks, the
        tail is evicted before the shared head.

        Raises:
            KeyError: ``seq_id`` holds no blocks.
        """
        ref, block_hash, free, evictable = self._ref, self._hash, self._free, self._evictable
        for block in reversed(self._seqs.pop(seq_id)):
            ref[block] -= 1
            if ref[block] == 0:
                if block_hash[block] is None:
                    free.append(block)
                else:
                    evictable[block] = None

    def clear(self) -> None:
        """Forget every cached prefix. Evictable blocks become free; blocks of live
        sequences stay held but unhashed (they return to the free list on release)."""
        for block in self._by_hash.values():
            self._hash[block] = None
        self._by_hash.clear()
        self.version += 1
        self._free.extend(self._evictable)
        self._evictable.clear()

    def _take(self) -> int:
        if self._free:
            return self._free.pop()
        block, _ = self._evictable.popitem(last=False)
        del self._by_hash[self._hash[block]]  # type: ignore[arg-type]
        self._hash[block] = None
        self.num_evictions += 1
        self.version += 1
        return block

    # ---- invariants ----------------------------------------------------------
    def check_integrity(self) -> None:
        """Raise ``AssertionError`` if any invariant is violated.

        Ref counts equal the number of live sequences holding each block; every
        block is in exactly one of free / evictable / in use; the hash index and
        the blocks' hashes agree (so an evicted hash can never match again).
        """
        holders: Counter[int] = Counter()
        for seq_id, blocks in self._seqs.items():
            assert len(set(blocks)) == len(blocks), f"{seq_id!r} holds a block twice"
            holders.update(blocks)
        free, evictable = set(self._free), set(self._evictable)
        assert len(free) == len(self._free), "duplicate block in the free list"
        assert not free & evictable, "block both free and evictable"
        for block in range(self.num_blocks):
            ref = self._ref[block]
            assert ref == holders[block], f"block {block}: ref {ref} != {holders[block]} holders"
            if ref > 0:
                assert block not in free and block not in evictable, f"block {block} in use"
            elif self._hash[block] is None:
                assert block in free, f"unhashed idle block {block} not free"
            else:
                assert block in evictable, f"hashed idle block {block} not evictable"
        for h, block in self._by_hash.items():
            assert self._hash[block] == h, f"hash index points to block {block} with another hash"
        hashed = sum(1 for h in self._hash if h is not None)
        assert hashed == len(self._by_hash), "block carries a hash missing from the index"

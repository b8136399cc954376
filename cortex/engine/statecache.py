"""KV-snapshot cache of the embedded llama.cpp engine (one per served model).

``StateCache`` is an LRU of KV snapshots (``llama_state_seq_get_data``) keyed by the
prompt token ids they hold, within a byte budget; ``LlamaCppEngine`` owns one per model
it serves. Only snapshot bytes count toward the budget. Token ids of different models
are not comparable, so a cache never holds two models' snapshots.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, NamedTuple

Tokens = tuple[int, ...]


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

"""Engine-choice policies (Ray Serve style: ``choose(candidates, call)``).

A router sees the pool's engines as ``Candidate`` snapshots and returns the
engine id to run the call on; returning a busy engine keeps the call queued
for it (prefix affinity within the load bound).
"""
from __future__ import annotations

import abc
from typing import NamedTuple

from cortex.orchestrator.run import StageCall
from cortex.registry import Registry


class Candidate(NamedTuple):
    engine_id: str
    load: int          # in-flight calls plus calls already waiting for this engine
    free_slots: int    # how many more calls it can start now
    cached_tokens: int  # leading prompt tokens it holds in cache (0 when not computed)


class BaseRouter(abc.ABC):
    needs_prefix: bool = False

    @abc.abstractmethod
    def choose(self, candidates: list[Candidate], call: StageCall) -> str | None:
        """Pick an engine for ``call``.

        Returns an engine id; if that engine has no free slot the call stays
        queued waiting for it (and counts toward its load). ``None``: no choice now.
        """


ROUTERS: Registry[type[BaseRouter]] = Registry("router")


def _least_loaded_free(candidates: list[Candidate]) -> str | None:
    free = [c for c in candidates if c.free_slots > 0]
    if not free:
        return None
    return min(free, key=lambda c: (c.load, c.engine_id)).engine_id


@ROUTERS.register("round_robin")
class RoundRobinRouter(BaseRouter):
    def __init__(self, **_: object) -> None:
        self._next = 0

    def choose(self, candidates: list[Candidate], call: StageCall) -> str | None:
        n = len(candidates)
        for i in range(n):
            cand = candidates[(self._next + i) % n]
            if cand.free_slots > 0:
                self._next = (self._next + i + 1) % n
                return cand.engine_id
        return None


@ROUTERS.register("least_loaded")
class LeastLoadedRouter(BaseRouter):
    def __init__(self, **_: object) -> None:
        pass

    def choose(self, candidates: list[Candidate], call: StageCall) -> str | None:
        return _least_loaded_free(candidates)


@ROUTERS.register("prefix_affinity")
class PrefixAffinityRouter(BaseRouter):
    """Longest cached prefix wins unless that engine's load exceeds the least
    loaded engine's by more than ``load_bound``; then least-loaded.

    When the preferred engine is within the bound but has no free slot, the
    call waits for it: a short wait for a warm cache beats a cold prefill.
    """

    needs_prefix = True

    def __init__(self, load_bound: int = 2, **_: object) -> None:
        if load_bound < 0:
            raise ValueError(f"load_bound must be >= 0, got {load_bound}")
        self.load_bound = load_bound

    def choose(self, candidates: list[Candidate], call: StageCall) -> str | None:
        best = max(candidates, key=lambda c: (c.cached_tokens, -c.load, c.engine_id))
        min_load = min(c.load for c in candidates)
        if best.cached_tokens == 0 or best.load - min_load > self.load_bound:
            return _least_loaded_free(candidates)
        return best.engine_id  # may be busy: the call then waits for the warm engine

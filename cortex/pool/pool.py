"""A stage pool: owns its queue, its engines' slots and their health.

The pool is synchronous: ``submit`` enqueues (or refuses when the bounded
queue is full), ``dispatch(now)`` pairs queued calls with engines according to
the scheduler (order) and router (engine choice), ``finished`` frees a slot.
The runtime actually starts the work.
"""
from __future__ import annotations

import bisect
import heapq
import itertools
import math
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

from cortex.engine.base import EngineView, num_waiting
from cortex.orchestrator.run import StageCall
from cortex.pool.router import BaseRouter, Candidate
from cortex.pool.scheduler import Scheduler, SortKey


@dataclass(slots=True)
class PoolStats:
    num_calls: int = 0
    num_rejected: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    queue_wait_s: float = 0.0
    busy_s: float = 0.0
    num_slo_met: int = 0
    num_slo_total: int = 0

    @property
    def prefix_hit_rate(self) -> float:
        return self.cached_prompt_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


class Dispatch(NamedTuple):
    call: StageCall
    engine_id: str


class PoolSnapshot(NamedTuple):
    name: str
    stages: tuple[str, ...]
    engine_ids: tuple[str, ...]
    healthy: tuple[str, ...]
    queue_depth: int
    in_flight: int
    capacity: int
    prefix_hit_rate: float


@dataclass(slots=True)
class _EngineSlot:
    view: EngineView
    calls: dict[str, StageCall] = field(default_factory=dict)  # in flight, dispatch order
    healthy: bool = True
    draining: bool = False


@dataclass(frozen=True, slots=True)
class LateOrder:
    """Slack-ordered pools serve *late* calls last: a queued call whose slack is below
    ``-factor`` x its own expected service can no longer help its run meet the SLO, so
    it waits until every call that still can has been dispatched (scheduler order
    within each group; nothing is dropped). ``when_tipped``: only while the pool has
    tipped into a mostly late queue (a pool whose backlog drains then never defers a
    call; deferred calls lose their prefix from the caches). docs/architecture.md."""

    factor: float = 0.0
    when_tipped: bool = False

    def __post_init__(self) -> None:
        if (isinstance(self.factor, bool) or not isinstance(self.factor, (int, float))
                or not math.isfinite(self.factor) or self.factor < 0):
            raise ValueError(f"late-last factor must be a number >= 0, got {self.factor!r}")


@dataclass
class StagePool:
    """Args:
        name: pool name (a stage name under ``cortex``, ``llm`` under shared policies).
        stages: stages this pool serves.
        scheduler: queue-order key function.
        router: engine-choice policy.
        max_queue: bounded queue; a call beyond it is refused (its run is rejected).
        scan_window: how deep ``dispatch`` looks past calls waiting for a busy engine.
        hold_for_memory: dispatch a call to an engine only when its KV memory can take
            the call now (prompt not already cached + ``max_tokens``; engines that say:
            ``kv_room_tokens()``) and the engine holds no call it cannot run yet. The
            rest wait in the pool, in scheduler order, and are routed when memory
            frees, instead of in the engine's own first-come queue, where slack order
            no longer applies and the cache the router chose the engine for may be
            evicted before the call runs. An engine with nothing in flight always
            takes a call. Engines that do not report their room are unaffected.
        late: None: serve strictly in scheduler order. A ``LateOrder``: calls that can
            no longer help their run meet its SLO are served after every call that
            still can (always, or only while the pool has *tipped*: at least
            ``TIP_LATE_SHARE`` of a queue of at least ``TIP_MIN_QUEUE`` calls is late;
            it returns to strict order once fewer than ``UNTIP_LATE_SHARE`` of the
            queued calls are late, or the queue is empty).
    """

    TIP_LATE_SHARE: ClassVar[float] = 0.5
    TIP_MIN_QUEUE: ClassVar[int] = 32
    UNTIP_LATE_SHARE: ClassVar[float] = 0.1

    name: str
    stages: tuple[str, ...]
    scheduler: Scheduler
    router: BaseRouter
    max_queue: int = 1024
    scan_window: int = 64
    late: LateOrder | None = None
    hold_for_memory: bool = False
    stats: PoolStats = field(default_factory=PoolStats)
    tipped: bool = field(default=False, init=False)  # serving late calls last now
    _slots: dict[str, _EngineSlot] = field(default_factory=dict)
    _queue: list[tuple[SortKey, StageCall]] = field(default_factory=list)
    _seq: itertools.count = field(default_factory=itertools.count)

    # ---- engines -----------------------------------------------------------
    def add_engine(self, view: EngineView) -> None:
        self._slots[view.engine_id] = _EngineSlot(view)

    def remove_engine(self, engine_id: str) -> EngineView:
        """Detach an idle engine (the allocator drains it first)."""
        slot = self._slots[engine_id]
        if slot.calls:
            raise RuntimeError(f"engine {engine_id} still has {len(slot.calls)} calls in flight")
        del self._slots[engine_id]
        return slot.view

    def set_healthy(self, engine_id: str, healthy: bool) -> None:
        self._slots[engine_id].healthy = healthy

    def set_draining(self, engine_id: str, draining: bool) -> None:
        self._slots[engine_id].draining = draining

    @property
    def engine_ids(self) -> list[str]:
        return list(self._slots)

    def views(self) -> list[EngineView]:
        return [slot.view for slot in self._slots.values()]

    def healthy_engines(self) -> list[str]:
        return [e for e, s in self._slots.items() if s.healthy]

    def in_flight(self, engine_id: str) -> int:
        return len(self._slots[engine_id].calls)

    def dispatched(self, engine_id: str) -> list[StageCall]:
        """The calls in flight on ``engine_id``, oldest dispatch first."""
        return list(self._slots[engine_id].calls.values())

    # ---- queue -------------------------------------------------------------
    def can_admit(self) -> bool:
        return len(self._queue) < self.max_queue

    def submit(self, call: StageCall, now: float) -> bool:
        """Enqueue ``call``; False when the queue is full (caller rejects the run)."""
        if not self.can_admit():
            self.stats.num_rejected += 1
            return False
        call.queued_at, call.pool, call.seq = now, self.name, next(self._seq)
        bisect.insort(self._queue, (self.scheduler(call), call), key=lambda item: item[0])
        return True

    def remove(self, call_id: str) -> bool:
        """Drop a queued call (its run was cancelled); False if it is not queued."""
        for i, (_, call) in enumerate(self._queue):
            if call.call_id == call_id:
                del self._queue[i]
                return True
        return False

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def queued(self) -> list[StageCall]:
        return [call for _, call in self._queue]

    # ---- dispatch ----------------------------------------------------------
    def dispatch(self, now: float) -> list[Dispatch]:
        """Pair queued calls with engines, in scheduler order (calls that can still
        meet their SLO first when ``late`` is set)."""
        live = {e: s for e, s in self._slots.items() if s.healthy and not s.draining}
        free = {e: s.view.max_concurrency - len(s.calls) for e, s in live.items()}
        if not self._queue:
            self.tipped = False  # the backlog drained
        if not self._queue or not any(v > 0 for v in free.values()):
            return []
        groups = [self._queue] if self.late is None else self._split_late(now, self.late)
        waiting = dict.fromkeys(live, 0)
        room = self._kv_room(live) if self.hold_for_memory else {}
        out, kept_groups, scanned = [], [], 0
        for group in groups:
            kept: list[tuple[SortKey, StageCall]] = []
            for item in group:
                call = item[1]
                if scanned >= self.scan_window or not any(v > 0 for v in free.values()):
                    kept.append(item)
                    continue
                scanned += 1
                candidates, need = self._candidates(live, free, waiting, call, room)
                engine_id = self.router.choose(candidates, call)
                chosen = next((c for c in candidates if c.engine_id == engine_id), None)
                if chosen is None or chosen.free_slots <= 0:
                    if engine_id is not None:
                        waiting[engine_id] += 1
                    kept.append(item)
                    continue
                free[engine_id] -= 1
                if engine_id in room:
                    room[engine_id] -= need.get(engine_id, 0)
                live[engine_id].calls[call.call_id] = call
                call.engine_id, call.started_at = engine_id, now
                self.stats.queue_wait_s += now - call.queued_at
                out.append(Dispatch(call, engine_id))
            kept_groups.append(kept)
        self._queue = (kept_groups[0] if len(kept_groups) == 1
                       else list(heapq.merge(*kept_groups, key=lambda item: item[0])))
        return out

    def _split_late(self, now: float, order: LateOrder
                    ) -> list[list[tuple[SortKey, StageCall]]]:
        """The queue as [calls that can still meet their SLO, late calls], each in
        scheduler order (the whole queue as one group while ``order.when_tipped`` and
        the pool has not tipped)."""
        viable, late = [], []
        for item in self._queue:
            (viable if item[1].can_meet_slo(now, order.factor) else late).append(item)
        if not order.when_tipped:
            return [viable, late]
        depth = len(self._queue)
        if not self.tipped:
            self.tipped = (depth >= self.TIP_MIN_QUEUE
                           and len(late) >= self.TIP_LATE_SHARE * depth)
        elif len(late) < self.UNTIP_LATE_SHARE * depth:  # depth > 0: dispatch checked
            self.tipped = False
        return [viable, late] if self.tipped else [self._queue]

    def _candidates(self, live: dict[str, _EngineSlot], free: dict[str, int],
                    waiting: dict[str, int], call: StageCall, room: dict[str, int]
                    ) -> tuple[list[Candidate], dict[str, int]]:
        """The engines as the router sees them, and the KV tokens ``call`` would take on
        each engine in ``room`` (its prompt beyond the cached prefix plus ``max_tokens``).
        An engine whose room is short shows no free slot (unless it is idle): the call
        waits here, in order."""
        request = call.request
        tokens = (request.prompt_tokens or []) if request is not None else []
        model = request.model if request is not None else None
        use_prefix = self.router.needs_prefix and bool(tokens)
        out, need = [], {}
        for e, s in live.items():
            slots = free[e]
            cached = (s.view.cached_prefix_len(tokens, model=model)
                      if tokens and (use_prefix or e in room) else 0)
            if e in room and request is not None:
                need[e] = len(tokens) - cached + request.params.max_tokens
                if slots > 0 and s.calls and room[e] < need[e]:
                    slots = 0
            out.append(Candidate(e, len(s.calls) + waiting[e], slots,
                                 cached if use_prefix else 0))
        return out, need

    @staticmethod
    def _kv_room(live: dict[str, _EngineSlot]) -> dict[str, int]:
        """KV tokens each memory-reporting engine could give new calls now; 0 for
        one that already holds calls it cannot run."""
        room = {}
        for e, s in live.items():
            fn = getattr(s.view, "kv_room_tokens", None)
            if callable(fn):
                room[e] = 0 if num_waiting(s.view) else fn()
        return room

    def finished(self, call: StageCall, prompt_tokens: int, cached_tokens: int | None,
                 service_s: float, met_deadline: bool | None = None) -> None:
        """Free the call's slot and account its usage."""
        slot = self._slots.get(call.engine_id)
        if slot is not None:
            slot.calls.pop(call.call_id, None)
        self.stats.num_calls += 1
        self.stats.prompt_tokens += prompt_tokens
        self.stats.cached_prompt_tokens += cached_tokens or 0
        self.stats.busy_s += service_s

    def snapshot(self) -> PoolSnapshot:
        return PoolSnapshot(
            self.name, self.stages, tuple(self._slots), tuple(self.healthy_engines()),
            len(self._queue), sum(len(s.calls) for s in self._slots.values()),
            sum(s.view.max_concurrency for s in self._slots.values()),
            self.stats.prefix_hit_rate)


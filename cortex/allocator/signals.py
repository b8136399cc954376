"""Load signals: turn live pools into the ``PoolLoad`` snapshots a policy sees.

Owner of the per-step windows (calls arriving and finishing, late calls, cache
hits) and of the smoothed rates per pool. ``observe_submit`` / ``observe`` are
told about every call entering / leaving a managed pool; ``snapshot`` closes a
pool's window and returns its load.

Offered work = calls arriving per second x the pool's *unloaded* cost
per call. The arrival rate is a slow EWMA (steady noise does not look like a
change), replaced by a fast one when the two differ by more than
``shift_ratio`` and by more than ``shift_z`` standard deviations of Poisson
noise (a level shift must not wait for the slow average; a quiet spell at a low
rate must not look like a pool going idle). The cost is
the lowest smoothed expected service time seen over the last ``cost_window_s``:
a call's expected service time grows with the load on its engines, which depends
on the allocation itself; the windowed minimum does not, so moving an engine does
not change the demand it was moved for. Backlog is the work queued in the pool and
held inside its engines (dispatched, waiting for KV memory), counting only calls that
can still help their run meet its SLO (``is_viable``).
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from cortex.allocator.types import EngineLoad, PoolLoad
from cortex.core import Usage
from cortex.engine.kvcache import SizeInfo
from cortex.orchestrator.run import StageCall
from cortex.pool.pool import StagePool


@dataclass(slots=True)
class _Window:
    opened_at: float | None = None
    arrived_work_s: float = 0.0       # expected service of the arrivals
    num_arrived: int = 0
    num_first: int = 0                # arrivals that are their run's first visit to the stage
    num_finished: int = 0
    num_late: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0


@dataclass(slots=True)
class _Rates:
    fast: float | None = None         # EWMAs of arrivals per second
    slow: float | None = None
    cost_s: float | None = None       # EWMA of expected service per arrival
    first_fast: float | None = None   # the same EWMAs of first visits per second
    first_slow: float | None = None
    on_time: float | None = None      # EWMA of the share of finished calls within SLO
    visits: deque[tuple[float, int, int]] = field(default_factory=deque)  # (t, calls, first)
    costs: deque[tuple[float, float]] = field(default_factory=deque)  # (t, cost_s)


def kv_usage(view: object) -> float | None:
    """Fraction of an engine's KV memory holding blocks (live or cached), when
    the backend can tell: ``view.kv_usage()`` (the llama.cpp engine: its
    snapshot budget in use) or a simulated engine's block cache."""
    return _kv_share(view, "kv_usage", lambda info: info.in_use + info.evictable)


def kv_live(view: object) -> float | None:
    """Fraction of an engine's KV memory held by running calls (reserved for their
    prompt and output; cached blocks nobody uses are not counted), when the backend
    can tell: ``view.kv_live()`` or a simulated engine's block cache."""
    return _kv_share(view, "kv_live", lambda info: info.in_use)


def _kv_share(view: object, method: str, blocks: Callable[[SizeInfo], int]) -> float | None:
    """``view.<method>()`` when the engine has it; else ``blocks(info) / info.total`` of
    a simulated engine's block cache; None when neither says."""
    fn = getattr(view, method, None)
    if callable(fn):
        return fn()
    size_info = getattr(getattr(view, "cache", None), "size_info", None)
    if not callable(size_info):
        return None
    info = size_info()
    return blocks(info) / info.total if info.total else None


class LoadMonitor:
    """Args:
        alpha: EWMA weight of the newest window in the fast average and the cost
            (one window per allocator step).
        slow_alpha: the same for the slow average of the arrival rate.
        shift_ratio: relative gap between the averages that counts as a level shift ...
        shift_z: ... when it is also this many standard deviations of Poisson noise.
        viable_slack_factor: queued calls count as backlog while their slack is at
            least minus this many times their expected service (``is_viable``).
        cost_window_s: how far back the unloaded cost per call looks (and the visits
            per run of ``workflow_demand``).
        workflow_demand: offered calls are at least the runs' first visits to the stage
            per second x the stage's visits per run (over ``cost_window_s``): a stage
            that loops on itself (the fixer) sees its repeat visits only as fast as it
            serves the earlier ones, so the arrival rate alone lags its demand after a
            shift, and lags most while the pool is short of engines. Repeat visits
            count in the share of the pool's calls that finish in time (an EWMA at
            ``slow_alpha``): a pool whose calls finish late is overloaded, and the
            repeats still to come there belong to runs that miss their SLO anyway.
    """

    def __init__(self, alpha: float = 0.8, cost_window_s: float = 120.0,
                 slow_alpha: float = 0.1, shift_ratio: float = 0.5, shift_z: float = 3.0,
                 viable_slack_factor: float = 1.0, workflow_demand: bool = True) -> None:
        if not (0.0 < alpha <= 1.0 and 0.0 < slow_alpha <= 1.0):
            raise ValueError(f"load EWMA weights must be in (0, 1], got {alpha}, {slow_alpha}")
        self.alpha, self.slow_alpha, self.shift_ratio = alpha, slow_alpha, shift_ratio
        self.shift_z, self.viable_slack_factor = shift_z, viable_slack_factor
        self.cost_window_s, self.workflow_demand = cost_window_s, workflow_demand
        self._windows: dict[str, _Window] = {}
        self._rates: dict[str, _Rates] = {}

    def open(self, pool: str, now: float) -> None:
        self._windows[pool] = _Window(opened_at=now)

    def observe_submit(self, pool: str, call: StageCall, now: float) -> None:
        """Count one call entering ``pool`` as offered work (late or not: the pool
        serves it either way)."""
        w = self._windows.setdefault(pool, _Window())
        w.num_arrived += 1
        w.num_first += call.attempt == 1
        w.arrived_work_s += call.expected_service_s

    def observe(self, pool: str, call: StageCall, usage: Usage, now: float) -> None:
        """Count one finished call of ``pool`` (late: past its run's deadline)."""
        w = self._windows.setdefault(pool, _Window())
        w.num_finished += 1
        w.num_late += now > call.deadline
        w.prompt_tokens += usage.prompt_tokens
        w.cached_tokens += usage.cached_prompt_tokens or 0

    def snapshot(self, pool: StagePool, model: str, engines: tuple[EngineLoad, ...],
                 lent_out: tuple[str, ...], now: float, close: bool = True) -> PoolLoad:
        """The pool's load now; ``close``: end its window and open the next."""
        w = self._windows.setdefault(pool.name, _Window())
        rates = self._rates.setdefault(pool.name, _Rates())
        calls, cost = self._update(w, rates, now, close)
        queued = pool.queued()
        queued_s = sum(c.expected_service_s for c in queued + self._held(pool, engines)
                       if self.is_viable(c, now))
        slack = min((c.slack(now) for c in queued), default=None)
        hit = w.cached_tokens / w.prompt_tokens if w.prompt_tokens else None
        load = PoolLoad(pool.name, model, engines, lent_out, len(queued),
                        sum(e.in_flight for e in engines), calls * cost, queued_s, slack,
                        w.num_late, w.num_finished, hit)
        if close:
            self._windows[pool.name] = _Window(opened_at=now)
        return load

    @staticmethod
    def _held(pool: StagePool, engines: tuple[EngineLoad, ...]) -> list[StageCall]:
        """Calls dispatched to an engine that cannot run them yet (its KV memory is
        full): queued work all the same, only queued inside the engine. Engines admit
        in arrival order, so they are the last ``waiting`` calls sent to each."""
        return [call for e in engines if e.waiting > 0
                for call in pool.dispatched(e.engine_id)[-e.waiting:]]

    def _update(self, w: _Window, rates: _Rates, now: float, close: bool
                ) -> tuple[float, float]:
        """Smoothed calls per second (with ``workflow_demand``, at least first visits
        x visits per run) and unloaded cost per call."""
        span = now - w.opened_at if w.opened_at is not None else 0.0
        fast, slow, cost = rates.fast, rates.slow, rates.cost_s
        if span > 0:
            fast = self._smooth(fast, w.num_arrived / span, self.alpha)
            slow = self._smooth(slow, w.num_arrived / span, self.slow_alpha)
        if w.num_arrived:
            cost = self._smooth(cost, w.arrived_work_s / w.num_arrived, self.alpha)
        calls = self._level(fast, slow, span)
        if self.workflow_demand:
            calls = max(calls, self._foreseen_calls(w, rates, span, now, close))
        costs = rates.costs
        if close:
            rates.fast, rates.slow, rates.cost_s = fast, slow, cost
            if cost is not None:
                costs.append((now, cost))
            self._prune(costs, now)
        unloaded = min((c for _, c in costs), default=cost or 0.0)
        return calls or 0.0, unloaded

    def _foreseen_calls(self, w: _Window, rates: _Rates, span: float, now: float,
                        close: bool) -> float:
        """``workflow_demand``: first visits per second (smoothed like all arrivals) x
        visits per run over ``cost_window_s``, the repeat visits weighted by the share
        of the pool's calls that finish within their run's SLO (slow EWMA): under
        overload the repeats still to come belong to runs that miss anyway."""
        ffast, fslow = rates.first_fast, rates.first_slow
        if span > 0:
            ffast = self._smooth(ffast, w.num_first / span, self.alpha)
            fslow = self._smooth(fslow, w.num_first / span, self.slow_alpha)
        visits = rates.visits
        first = sum(v[2] for v in visits) + w.num_first
        total = sum(v[1] for v in visits) + w.num_arrived
        on_time = rates.on_time
        if w.num_finished:
            on_time = self._smooth(on_time, 1 - w.num_late / w.num_finished, self.slow_alpha)
        if close:
            rates.first_fast, rates.first_slow = ffast, fslow
            rates.on_time = on_time
            visits.append((now, w.num_arrived, w.num_first))
            self._prune(visits, now)
        if not first:
            return 0.0
        repeats = (total / first - 1) * (1.0 if on_time is None else on_time)
        return self._level(ffast, fslow, span) * (1 + repeats)

    def _prune(self, window: deque, now: float) -> None:
        """Drop entries older than ``cost_window_s`` (each entry starts with its time)."""
        while window and window[0][0] < now - self.cost_window_s:
            window.popleft()

    def _level(self, fast: float | None, slow: float | None, span: float) -> float:
        """The slow average, or the fast one across a level shift."""
        if fast is not None and slow is not None and self._is_shift(fast, slow, span):
            return fast
        return slow or 0.0

    def is_viable(self, call: StageCall, now: float) -> bool:
        """Whether a queued call still counts as backlog: its slack is at least
        ``-viable_slack_factor`` x its own expected service. A call later than that
        belongs to a run that misses its SLO whatever the allocation does; under
        overload a pool's queue fills with such calls, and counting them would move
        engines away from a pool whose calls can still finish in time (the
        generator's first attempts, which complete runs on their own)."""
        return call.can_meet_slo(now, self.viable_slack_factor)

    def _is_shift(self, fast: float, slow: float, span: float) -> bool:
        """A level shift: the averages differ by more than ``shift_ratio`` and by
        more than ``shift_z`` standard deviations of Poisson noise over the fast
        average's memory. A few arrivals per window make a quiet spell normal (at
        0.3 calls/s, 3 s without a call happens 40% of the time), not a shift."""
        gap = abs(fast - slow)
        if gap <= self.shift_ratio * max(slow, 1e-9):
            return False
        memory_s = max(span, 1e-9) * (2.0 - self.alpha) / self.alpha   # EWMA's effective span
        return gap > self.shift_z * math.sqrt(max(slow, 1e-9) / memory_s)

    @staticmethod
    def _smooth(old: float | None, sample: float, alpha: float) -> float:
        return sample if old is None else old + alpha * (sample - old)

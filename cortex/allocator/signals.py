"""Load signals: turn live pools into the ``PoolLoad`` snapshots a policy sees.

Owner of the per-step windows (calls finished, late calls, cache hits) and of
the smoothed load per pool. ``observe`` is told about every finished call;
``snapshot`` closes a pool's window and returns its load.
"""
from __future__ import annotations

from dataclasses import dataclass

from cortex.allocator.types import EngineLoad, PoolLoad
from cortex.core import Usage
from cortex.orchestrator.run import StageCall
from cortex.pool.pool import StagePool


@dataclass(slots=True)
class _Window:
    work_rate: float | None = None    # EWMA across windows
    cost_s: float | None = None       # EWMA of expected service per arriving call
    opened_at: float | None = None
    arrived_work_s: float = 0.0
    num_arrived: int = 0
    num_finished: int = 0
    num_late: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0


def kv_usage(view: object) -> float | None:
    """Fraction of an engine's KV memory holding blocks (live or cached), when
    the backend can tell: ``view.kv_usage()`` or a simulated engine's cache."""
    fn = getattr(view, "kv_usage", None)
    if callable(fn):
        return fn()
    size_info = getattr(getattr(view, "cache", None), "size_info", None)
    if not callable(size_info):
        return None
    info = size_info()
    return (info.in_use + info.evictable) / info.total if info.total else None


class LoadMonitor:
    """Args:
        alpha: EWMA weight of the newest window (one window per allocator step).
    """

    def __init__(self, alpha: float = 0.3) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"load EWMA alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self._windows: dict[str, _Window] = {}

    def open(self, pool: str, now: float) -> None:
        self._windows[pool] = _Window(opened_at=now)

    def observe_submit(self, pool: str, call: StageCall) -> None:
        """Count one call entering ``pool`` (its expected service is offered work)."""
        w = self._windows.setdefault(pool, _Window())
        w.num_arrived += 1
        w.arrived_work_s += call.expected_service_s

    def observe(self, pool: str, call: StageCall, usage: Usage, now: float) -> None:
        """Count one finished call of ``pool`` (late: past its run's deadline)."""
        w = self._windows.setdefault(pool, _Window())
        w.num_finished += 1
        w.num_late += now > call.deadline
        w.prompt_tokens += usage.prompt_tokens
        w.cached_tokens += usage.cached_prompt_tokens or 0

    def snapshot(self, pool: StagePool, model: str, engines: tuple[EngineLoad, ...],
                 lent_out: tuple[str, ...], now: float) -> PoolLoad:
        """The pool's load now; closes its window and opens the next."""
        w = self._windows.setdefault(pool.name, _Window())
        span = now - w.opened_at if w.opened_at is not None else 0.0
        rate, cost = w.work_rate, w.cost_s
        if span > 0:
            rate = self._smooth(rate, w.arrived_work_s / span)
        if w.num_arrived:
            cost = self._smooth(cost, w.arrived_work_s / w.num_arrived)
        queued = pool.queued()
        in_flight = sum(e.in_flight for e in engines)
        queued_s = sum(c.expected_service_s for c in queued)
        slack = min((c.slack(now) for c in queued), default=None)
        hit = w.cached_tokens / w.prompt_tokens if w.prompt_tokens else None
        load = PoolLoad(pool.name, model, engines, lent_out, len(queued), in_flight, rate or 0.0,
                        queued_s + in_flight * (cost or 0.0), slack, w.num_late,
                        w.num_finished, hit)
        self._windows[pool.name] = _Window(rate, cost, now)
        return load

    def _smooth(self, old: float | None, sample: float) -> float:
        return sample if old is None else old + self.alpha * (sample - old)

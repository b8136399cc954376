"""Load signals: offered work must follow the workload, not the allocation."""
from __future__ import annotations

from cortex.allocator.signals import LoadMonitor
from cortex.allocator.types import EngineLoad
from cortex.core import Usage
from cortex.pool.pool import StagePool
from cortex.pool.router import ROUTERS
from cortex.pool.scheduler import SCHEDULERS
from tests.factories import FakeView, make_call


def _pool() -> StagePool:
    return StagePool("p", ("gen",), SCHEDULERS.get("fcfs"), ROUTERS.get("least_loaded")())


def _step(monitor: LoadMonitor, pool: StagePool, t: float, calls: int, cost: float):
    for i in range(calls):
        monitor.observe_submit("p", make_call(f"c{t}-{i}", slack_key=1e9, expected_s=cost), t)
    return monitor.snapshot(pool, "m", (), (), t + 1.0)


def test_steady_noise_is_smoothed_and_a_shift_is_seen_at_once():
    monitor, pool = LoadMonitor(alpha=0.5, slow_alpha=0.1, shift_ratio=0.5), _pool()
    monitor.open("p", 0.0)
    for t, n in enumerate([50, 60, 40, 55, 45, 50, 58, 42]):
        load = _step(monitor, pool, float(t), n, 1.0)
    assert 45 < load.work_rate < 55                     # the slow average
    load = _step(monitor, pool, 8.0, 250, 1.0)          # 5x: a level shift
    assert load.work_rate > 130                         # the fast average takes over


def test_a_costlier_call_after_a_move_does_not_raise_demand():
    monitor, pool = LoadMonitor(alpha=0.5, cost_window_s=120.0), _pool()
    monitor.open("p", 0.0)
    for t in range(5):
        base = _step(monitor, pool, float(t), 50, 1.0)
    for t in range(5, 10):                              # fewer engines: calls take longer
        later = _step(monitor, pool, float(t), 50, 1.5)
    assert abs(later.work_rate - base.work_rate) < 1e-6  # the unloaded cost stays 1.0 s
    assert later.backlog_s == 0.0


def test_peeking_does_not_close_the_window():
    monitor, pool = LoadMonitor(), _pool()
    monitor.open("p", 0.0)
    for i in range(10):
        monitor.observe_submit("p", make_call(f"c{i}", slack_key=1e9), 0.5)
    peek = monitor.snapshot(pool, "m", (), (), 1.0, close=False)
    real = monitor.snapshot(pool, "m", (), (), 1.0)
    assert peek == real and real.work_rate == 10.0


def test_a_quiet_spell_at_a_low_rate_is_noise_not_a_pool_going_idle():
    # 0.3 calls/s: seconds without a call are normal Poisson gaps. The offered load
    # must stay near the slow average, or an allocator would lend the pool's engines.
    monitor, pool = LoadMonitor(alpha=0.5, slow_alpha=0.1, shift_ratio=0.5), _pool()
    monitor.open("p", 0.0)
    pattern = [1, 0, 0, 1, 0, 0, 0, 1, 0, 0]            # 0.3 calls/s on average
    for t in range(60):
        load = _step(monitor, pool, float(t), pattern[t % len(pattern)], 2.0)
    for t in range(60, 64):                             # four quiet seconds
        load = _step(monitor, pool, float(t), 0, 2.0)
    assert load.work_rate > 0.3                         # ~0.6 s/s: still the slow average


def test_a_pool_that_really_goes_idle_is_seen_as_idle():
    monitor, pool = LoadMonitor(alpha=0.5, slow_alpha=0.1, shift_ratio=0.5), _pool()
    monitor.open("p", 0.0)
    for t in range(30):
        load = _step(monitor, pool, float(t), 20, 1.0)
    for t in range(30, 36):                             # 20/s -> 0: far beyond noise
        load = _step(monitor, pool, float(t), 0, 1.0)
    assert load.work_rate < 1.0


def test_backlog_counts_only_calls_that_can_still_make_their_slo():
    # Under overload a queue fills with calls of runs that are already lost; they must
    # not pull engines away from a pool whose calls can still finish in time.
    monitor, pool = LoadMonitor(viable_slack_factor=1.0), _pool()
    monitor.open("p", 0.0)
    fresh = make_call("fresh", slack_key=100.0, expected_s=2.0)     # slack +90 at t=10
    late = make_call("late", slack_key=9.0, expected_s=2.0)         # slack -1: still viable
    lost = make_call("lost", slack_key=5.0, expected_s=2.0)         # slack -5: lost
    for call in (fresh, late, lost):
        pool.submit(call, 0.0)
    load = monitor.snapshot(pool, "m", (), (), 10.0)
    assert load.queue_depth == 3 and load.backlog_s == 4.0


def test_calls_held_inside_a_full_engine_are_backlog_too():
    # A memory-bound engine accepts calls it cannot run yet; the pool's queue looks
    # short while the work waits inside the engine. Those calls are backlog like the
    # queue's (the last ones dispatched: engines admit in arrival order), and only
    # the ones that can still make their SLO count.
    monitor = LoadMonitor(viable_slack_factor=1.0)
    pool = StagePool("p", ("gen",), SCHEDULERS.get("fcfs"), ROUTERS.get("least_loaded")())
    pool.add_engine(FakeView("e0", max_concurrency=4))
    monitor.open("p", 0.0)
    calls = [make_call("running", slack_key=100.0, expected_s=2.0),
             make_call("held-lost", slack_key=5.0, expected_s=2.0),     # slack -5 at t=10
             make_call("held-1", slack_key=100.0, expected_s=2.0),
             make_call("held-2", slack_key=100.0, expected_s=3.0)]
    for call in calls:
        pool.submit(call, 0.0)
    assert len(pool.dispatch(0.0)) == 4 and pool.queue_depth == 0

    def engine(waiting: int) -> EngineLoad:
        return EngineLoad("e0", "p", 4, float("-inf"), False, None, slots=4, waiting=waiting)

    assert monitor.snapshot(pool, "m", (engine(0),), (), 10.0).backlog_s == 0.0
    assert monitor.snapshot(pool, "m", (engine(3),), (), 11.0).backlog_s == 5.0
    assert monitor.snapshot(pool, "m", (engine(1),), (), 12.0).backlog_s == 3.0


def _visit(call_id: str, attempt: int):
    call = make_call(call_id, slack_key=1e9, expected_s=1.0)
    call.attempt = attempt
    return call


def _fixer_shift(workflow_demand: bool, late: bool = False) -> float:
    """A fixer loops on itself: 10 runs/s enter it, each visits it 1.5 times (every
    other run fixes twice). After a shift to 40 runs/s entering, the repeat visits
    arrive only as fast as the short pool serves the first ones. ``late``: from the
    shift on, every call the pool finishes is past its run's deadline."""
    monitor, pool = LoadMonitor(workflow_demand=workflow_demand), _pool()
    monitor.open("p", 0.0)
    for t in range(63):
        for i in range(40 if t >= 60 else 10):
            monitor.observe_submit("p", _visit(f"{t}-{i}", 1), float(t))
        for i in range(5):
            monitor.observe_submit("p", _visit(f"{t}-{i}r", 2), float(t))
        for i in range(15):
            done = _visit(f"{t}-{i}d", 1)
            done.deadline = t if late and t >= 60 else 1e9
            monitor.observe("p", done, Usage(), t + 0.5)
        load = monitor.snapshot(pool, "m", (), (), t + 1.0)
        if t == 59:
            assert abs(load.work_rate - 15.0) < 0.5      # steady: both estimates agree
    return load.work_rate


def test_workflow_demand_counts_the_repeat_visits_a_shift_will_bring():
    # The workflow-aware estimate counts the repeats at once, the arrival rate does not.
    plain, aware = _fixer_shift(False), _fixer_shift(True)
    assert plain < 46                                    # what arrived: ~45 calls/s
    assert aware > 55                                    # 40 x ~1.5 visits per run


def test_workflow_demand_discounts_repeats_while_the_pool_finishes_calls_late():
    # Under overload the repeats still to come belong to runs that miss their SLO:
    # they count in the share of calls the pool finishes in time (a slow EWMA).
    on_time, late = _fixer_shift(True), _fixer_shift(True, late=True)
    assert late < on_time - 3
    assert late > 40                                     # first visits still count

"""The default policy: purity, the move rule, hysteresis and dwell, registry."""
from __future__ import annotations

import copy
import random

import pytest

from cortex.allocator import ALLOCATION_POLICIES, AllocatorConfig, DecisionKind, PressurePolicy
from tests.allocator.alloc_factories import ctx, engines, load


def test_no_moves_during_warm_up():
    policy = PressurePolicy(warmup_s=10.0, confirm_steps=1)
    c = ctx(5.0, load("gen", 4, work=4.0), load("fix", 2, work=20.0))
    decisions, state = policy.decide(c, policy.initial_state())
    assert decisions == [] and state.started_at == 5.0
    assert policy.decide(c._replace(now=15.0), state)[0]


def test_registry_names_and_bad_options():
    assert {"static", "slo-pressure"} <= set(ALLOCATION_POLICIES.names())
    with pytest.raises(ValueError, match="confirm_steps"):
        PressurePolicy(confirm_steps=0)
    with pytest.raises(TypeError):
        PressurePolicy(no_such_option=1)


@pytest.mark.parametrize("option, value, want", [
    ("min_dwell_s", float("nan"), "min_dwell_s must be a finite number"),  # nan < 0 is False
    ("hysteresis", float("inf"), "hysteresis must be a finite number"),
    ("drain_s", float("nan"), "drain_s must be a finite number"),
    ("warmup_s", float("-inf"), "warmup_s must be a finite number"),
    ("confirm_steps", 1.5, "confirm_steps must be an integer"),
    ("max_moves_per_step", True, "max_moves_per_step must be an integer"),
    ("lend_below", "0.1", "lend_below must be a finite number"),
    ("lend_last_engine", "false", "lend_last_engine must be true or false"),  # "false" is truthy
    ("saturation_moves", 1, "saturation_moves must be true or false"),
])
def test_pressure_options_must_be_finite_numbers(option, value, want):
    with pytest.raises(ValueError, match=want):
        PressurePolicy(**{option: value})
    assert PressurePolicy(min_dwell_s=5, lend_last_engine=False).config.min_dwell_s == 5


@pytest.mark.parametrize("field, value", [("interval_s", float("nan")),
                                          ("interval_s", float("inf")), ("interval_s", 0),
                                          ("load_alpha", float("nan")), ("load_alpha", 1.5),
                                          ("cost_window_s", float("inf")),
                                          ("cold_window_s", float("nan")),
                                          ("cold_window_s", -1.0)])
def test_allocator_config_refuses_non_finite_and_out_of_range_timings(field, value):
    with pytest.raises(ValueError, match=f"allocator: {field} must be a finite number"):
        AllocatorConfig(**{field: value})
    assert AllocatorConfig(interval_s=0.25, cold_window_s=0).interval_s == 0.25


def test_same_snapshots_same_decisions_and_inputs_untouched():
    policy = PressurePolicy(warmup_s=0, confirm_steps=1)
    c = ctx(100.0, load("gen", 6, work=60.0), load("fix", 2, work=4.0))
    state = policy.initial_state()
    c_copy, state_copy = copy.deepcopy(c), copy.deepcopy(state)
    first = policy.decide(c, state)
    second = policy.decide(c, state)
    assert first == second and first[0]
    assert c == c_copy and state == state_copy
    assert PressurePolicy(warmup_s=0, confirm_steps=1).decide(c_copy, state_copy) == first


def test_moves_from_most_spare_to_busiest_after_confirmation():
    policy = PressurePolicy(warmup_s=0, confirm_steps=2, hysteresis=0.1)
    # fix 6/2 = 3 per engine > 1.1 x gen 8/3 = 2.93 after the move (not urgent: < 2x)
    c = ctx(10.0, load("gen", 4, work=8.0), load("fix", 2, work=6.0))
    decisions, state = policy.decide(c, policy.initial_state())
    assert decisions == [] and state.streak == 1                  # not confirmed yet
    decisions, state = policy.decide(c._replace(now=11.0), state)
    (d,) = decisions                                               # 6/3 = 2 < 1.1 x 8/2: one
    assert (d.kind, d.source, d.target) == (DecisionKind.MOVE, "gen", "fix")
    assert state.streak == 0 and dict(state.received_at) == {"fix": 11.0}


def test_urgent_imbalance_moves_at_once_and_several_engines():
    policy = PressurePolicy(warmup_s=0, confirm_steps=3, hysteresis=0.1)
    c = ctx(10.0, load("gen", 4, work=4.0), load("fix", 2, work=20.0))
    decisions, _ = policy.decide(c, policy.initial_state())
    # each engine must still beat gen after the previous ones left:
    # 20/2 > 1.1*4/3, 20/3 > 1.1*4/2, 20/4 > 1.1*4/1; gen keeps its last engine
    assert [(d.source, d.target) for d in decisions] == [("gen", "fix")] * 3


def test_no_move_inside_the_hysteresis_band_or_when_all_is_quiet():
    policy = PressurePolicy(warmup_s=0, confirm_steps=1, hysteresis=0.25)
    # fix 10/2 = 5 per engine; gen after giving one: 12/3 = 4 -> 5 <= 1.25*4: no move
    c = ctx(0.0, load("gen", 4, work=12.0), load("fix", 2, work=10.0))
    assert policy.decide(c, policy.initial_state())[0] == []
    quiet = ctx(0.0, load("gen", 4, work=0.0), load("fix", 2, work=0.1))
    assert policy.decide(quiet, policy.initial_state())[0] == []


def test_dwell_keeps_recent_arrivals_and_the_last_engine():
    policy = PressurePolicy(warmup_s=0, confirm_steps=1, min_dwell_s=15.0)
    recent = engines("gen", 2, since=95.0)
    c = ctx(100.0, load("gen", work=1.0, engine_list=recent), load("fix", 1, work=30.0))
    assert policy.decide(c, policy.initial_state())[0] == []      # both moved in 5 s ago
    lone = ctx(100.0, load("gen", 1, work=0.5), load("fix", 1, work=30.0))
    assert policy.decide(lone, policy.initial_state())[0] == []   # never a busy pool's last


def test_a_pool_just_fed_gives_back_only_in_an_emergency():
    policy = PressurePolicy(warmup_s=0, confirm_steps=1, min_dwell_s=15.0)
    c = ctx(10.0, load("gen", 4, work=4.0), load("fix", 4, work=40.0))
    moves, state = policy.decide(c, policy.initial_state())
    assert moves and all(d.target == "fix" for d in moves)
    # gen 5/engine beats fix 20/6 = 3.3 after a move, but not by urgent_ratio (2x)
    flipped = ctx(12.0, load("gen", 2, work=10.0), load("fix", 7, work=20.0))
    assert policy.decide(flipped, state)[0] == []
    assert policy.decide(flipped._replace(now=26.0), state)[0]      # dwell over
    emergency = ctx(12.0, load("gen", 2, work=40.0), load("fix", 7, work=20.0))
    assert policy.decide(emergency, state)[0]


def test_a_pool_just_fed_gives_back_only_after_a_confirmed_emergency():
    # urgency skips confirmation, but not when it would undo a move made a step ago:
    # a one-step spike (a burst of queued calls) must not bounce engines back and forth
    policy = PressurePolicy(warmup_s=0, confirm_steps=2, min_dwell_s=15.0)
    c = ctx(10.0, load("gen", 4, work=4.0), load("fix", 4, work=40.0))
    moves, state = policy.decide(c, policy.initial_state())
    assert moves and all(d.target == "fix" for d in moves)          # urgent: at once
    spike = ctx(11.0, load("gen", 2, work=40.0), load("fix", 7, work=20.0))
    decisions, state = policy.decide(spike, state)
    assert decisions == [] and state.streak == 1
    calm = ctx(12.0, load("gen", 2, work=4.0), load("fix", 7, work=20.0))
    assert policy.decide(calm, state)[0] == []                     # it passed: nothing
    moves, _ = policy.decide(spike._replace(now=12.0), state)     # it lasted: back
    assert moves and all((d.source, d.target) == ("fix", "gen") for d in moves)


def test_models_must_match():
    policy = PressurePolicy(warmup_s=0, confirm_steps=1)
    c = ctx(0.0, load("gen", 6, work=1.0, model="a"), load("fix", 1, work=30.0, model="b"))
    assert policy.decide(c, policy.initial_state())[0] == []


def _fluid(policy: PressurePolicy, demand: dict[str, float], steps: int, noise: float = 0.0,
           seed: int = 0) -> list[tuple[float, str, str]]:
    """Steady offered load: each pool holds demand calls whatever its engines (exogenous),
    moves take effect at once. Returns the moves as (time, source, target)."""
    rng = random.Random(seed)
    count = {"gen": 8, "fix": 8}
    since: dict[str, float] = {}
    state, moves = policy.initial_state(), []
    for t in range(steps):
        pools = []
        for name, n in count.items():
            es = tuple(e._replace(since=since.get(e.engine_id, float("-inf")))
                       for e in engines(name, n))
            work = demand[name] * (1 + rng.uniform(-noise, noise))
            pools.append(load(name, work=work, engine_list=es))
        decisions, state = policy.decide(ctx(float(t), *pools), state)
        for d in decisions:
            count[d.source] -= 1
            count[d.target] += 1
            since[f"{d.target}{count[d.target] - 1}"] = float(t)
            moves.append((float(t), d.source, d.target))
    return moves


@pytest.mark.parametrize("noise", [0.0, 0.1])
def test_no_oscillation_on_steady_input(noise):
    moves = _fluid(PressurePolicy(), {"gen": 30.0, "fix": 90.0}, steps=300, noise=noise)
    assert moves, "an imbalance of 1:3 must be corrected"
    assert all((s, t) == ("gen", "fix") for _, s, t in moves)     # never back and forth
    assert moves[-1][0] < 60.0                                     # and it settles


def test_balanced_steady_input_never_moves():
    assert _fluid(PressurePolicy(), {"gen": 40.0, "fix": 40.0}, steps=200, noise=0.05) == []


def _slotted(name: str, n: int, in_flight: int, slots: int = 16):
    return tuple(e._replace(in_flight=in_flight, slots=slots) for e in engines(name, n))


def test_a_saturated_pool_takes_an_engine_from_one_with_spare_slots():
    # Balanced by expected work (no pressure move), but fix's queue is made of calls too
    # late to count as demand: every fix slot is busy, gen's are a third busy.
    policy = PressurePolicy(warmup_s=0, confirm_steps=2, saturation_moves=True,
                            spare_occupancy=0.6)
    gen = load("gen", 7, work=35.0, engine_list=_slotted("gen", 7, 6))
    fix = load("fix", 9, work=45.0, queue=120, engine_list=_slotted("fix", 9, 16))
    assert fix.is_saturated and not gen.is_saturated
    c = ctx(30.0, gen, fix)
    off = PressurePolicy(warmup_s=0, confirm_steps=1)
    assert off.decide(c, off.initial_state())[0] == []            # without the option: none
    decisions, state = policy.decide(c, policy.initial_state())
    assert decisions == [] and state.streak == 1                  # confirmed like any move
    (d,), state = policy.decide(c._replace(now=31.0), state)
    assert (d.kind, d.source, d.target) == (DecisionKind.MOVE, "gen", "fix")
    assert "saturated" in d.reason and dict(state.received_at) == {"fix": 31.0}


@pytest.mark.parametrize("gen_in_flight, gen_queue", [(10, 0), (6, 3)])
def test_no_saturation_move_from_a_busy_or_queueing_donor(gen_in_flight, gen_queue):
    # 7 x 10 in flight over 6 x 16 slots = 73% > 60% after the move; or gen queues itself
    policy = PressurePolicy(warmup_s=0, confirm_steps=1, saturation_moves=True)
    gen = load("gen", 7, work=35.0, queue=gen_queue,
               engine_list=_slotted("gen", 7, gen_in_flight))
    fix = load("fix", 9, work=45.0, queue=120, engine_list=_slotted("fix", 9, 16))
    assert policy.decide(ctx(30.0, gen, fix), policy.initial_state())[0] == []


def test_pressure_never_takes_from_a_saturated_pool_when_saturation_moves_are_on():
    # gen's expected work says it is the more pressed, but fix is saturated with a queue
    # while gen's slots are a third busy: with saturation moves the pressure rule leaves
    # fix alone and the measured saturation wins (so the two rules never undo each other).
    gen = load("gen", 6, work=60.0, engine_list=_slotted("gen", 6, 6))
    fix = load("fix", 10, work=20.0, queue=50, engine_list=_slotted("fix", 10, 16))
    c = ctx(30.0, gen, fix)
    plain = PressurePolicy(warmup_s=0, confirm_steps=1)
    off = plain.decide(c, plain.initial_state())[0]
    assert off and all((d.source, d.target) == ("fix", "gen") for d in off)
    policy = PressurePolicy(warmup_s=0, confirm_steps=1, saturation_moves=True)
    (d,), _ = policy.decide(c, policy.initial_state())
    assert (d.source, d.target) == ("gen", "fix") and "saturated" in d.reason


def test_no_saturation_move_from_a_donor_whose_kv_memory_binds_first():
    # gen's slots are a third busy, but its running calls hold 70% of its KV memory:
    # six engines would each need 7 x 0.7 / 6 = 82% -- more than spare_occupancy.
    fix = load("fix", 9, work=45.0, queue=120, engine_list=_slotted("fix", 9, 16))
    policy = PressurePolicy(warmup_s=0, confirm_steps=1, saturation_moves=True,
                            spare_occupancy=0.6)

    def gen_with(live):
        es = tuple(e._replace(kv_live=live) for e in _slotted("gen", 7, 5))
        return load("gen", 7, work=35.0, engine_list=es)

    full = gen_with(0.7)
    assert full.busy_after_giving(full.engines[0]) == pytest.approx(7 * 0.7 / 6)
    assert policy.decide(ctx(30.0, full, fix), policy.initial_state())[0] == []
    light = gen_with(0.3)                       # 35% of memory after, 36% of slots
    assert light.busy_after_giving(light.engines[0]) == pytest.approx(35 / 96)
    (d,), _ = policy.decide(ctx(30.0, light, fix), policy.initial_state())
    assert (d.source, d.target) == ("gen", "fix")
    unknown = load("gen", 7, work=35.0, engine_list=tuple(                # one engine
        e._replace(kv_live=None if e.engine_id == "gen0" else 0.9)         # cannot tell:
        for e in _slotted("gen", 7, 5)))                                  # slots decide
    assert unknown.busy_after_giving(unknown.engines[0]) == pytest.approx(35 / 96)

"""Allocation policies: pure functions of pool loads (and their own state).

A policy is a small class whose ``decide(ctx, state)`` returns the decisions to
carry out and its next state, Ray Serve's autoscaling style. It must not mutate
``ctx`` or ``state`` and must not look at anything else, so the same inputs
always give the same decisions (tests check this). The ``Allocator`` validates
and carries out what a policy decides; a policy cannot break the move protocol.

Policies are registered by name in ``ALLOCATION_POLICIES``.
"""
from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import Any

from cortex.allocator.types import AllocationContext, Decision, EngineLoad, PoolLoad
from cortex.registry import Registry


class BaseAllocationPolicy(abc.ABC):
    """Decides engine moves from pool loads. Subclasses take keyword options, named
    in ``OPTIONS`` (configs are checked against it before the policy is built; None:
    not declared, the constructor alone decides)."""

    OPTIONS: tuple[str, ...] | None = None

    @abc.abstractmethod
    def initial_state(self) -> Any:
        """The state passed to the first ``decide`` (immutable)."""

    def start(self, state: Any, now: float) -> Any:
        """The state after the allocator's first step at ``now`` (which only opens the
        load windows and asks for no decision); default: ``state`` unchanged."""
        return state

    def check_pools(self, pools: Iterable[str]) -> None:
        """Raise ValueError if the policy's options name a pool not in ``pools`` (the
        LLM pools it will manage); called when the allocator takes them over."""

    @abc.abstractmethod
    def decide(self, ctx: AllocationContext, state: Any) -> tuple[list[Decision], Any]:
        """Decisions for this step and the next state.

        Args:
            ctx: time and one ``PoolLoad`` per LLM pool.
            state: what the previous call returned (or ``initial_state()``).
        Returns:
            (decisions, next state); neither argument is modified.
        """


ALLOCATION_POLICIES: Registry[type[BaseAllocationPolicy]] = Registry("allocation policy")


@ALLOCATION_POLICIES.register("static")
class StaticPolicy(BaseAllocationPolicy):
    """Never moves anything: the placement's split stays (used to record timelines
    of static policies with the same monitor). No options."""

    OPTIONS = ()

    def __init__(self) -> None:
        pass

    def initial_state(self) -> None:
        return None

    def decide(self, ctx: AllocationContext, state: None) -> tuple[list[Decision], None]:
        return [], state


class PolicyOptionError(ValueError):
    """A bad allocation-policy option; ``option`` names it when it is unknown."""

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


def build_policy(name: str, options: dict[str, Any]) -> BaseAllocationPolicy:
    """The registered policy ``name`` with ``options``, checked against its ``OPTIONS``.

    Raises:
        PolicyOptionError: an option the policy does not have (``option`` names it) or a
            value it refuses.
    """
    cls = ALLOCATION_POLICIES.get(name)
    unknown = sorted(set(options) - set(cls.OPTIONS)) if cls.OPTIONS is not None else []
    if unknown:
        raise PolicyOptionError(f"unknown option of allocation policy {name} (its options: "
                                f"{', '.join(cls.OPTIONS) or 'none'})", unknown[0])
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        raise PolicyOptionError(f"{exc} (allocation policy {name})",
                                getattr(exc, "option", None)) from None


# ---- helpers shared by policies ----------------------------------------------
def compatible(a: PoolLoad, b: PoolLoad) -> bool:
    """Engines may serve both pools: same model."""
    return a.name != b.name and a.model == b.model


def has_drain(pool: PoolLoad) -> bool:
    return any(e.is_draining for e in pool.engines)


def own_active(pool: PoolLoad) -> int:
    """Active engines of ``pool``'s own (not on loan from another pool)."""
    return sum(1 for e in pool.active if e.home == pool.name)


def movable_engines(pool: PoolLoad, now: float, min_dwell_s: float) -> list[EngineLoad]:
    """Home engines of ``pool`` that have served it for ``min_dwell_s``, fewest
    calls in flight first (they drain soonest)."""
    return sorted((e for e in pool.active if e.home == pool.name
                   and now - e.since >= min_dwell_s),
                  key=lambda e: (e.in_flight, e.engine_id))

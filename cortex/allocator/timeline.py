"""Timelines of an allocation: engines per pool, calls in each pool and SLO
attainment over time, as JSON-able data and as a PNG (matplotlib)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from cortex.allocator.types import AllocationContext
from cortex.orchestrator.run import Run


class TimelineSample(NamedTuple):
    t: float
    engines: dict[str, int]     # active engines per pool
    queued: dict[str, int]
    in_flight: dict[str, int]
    num_moves: int              # decisions begun so far


class Timeline:
    """Samples recorded by the allocator once per step."""

    def __init__(self) -> None:
        self.samples: list[TimelineSample] = []

    def record(self, ctx: AllocationContext, num_moves: int) -> None:
        self.samples.append(TimelineSample(
            ctx.now, {p.name: p.num_active for p in ctx.pools},
            {p.name: p.queue_depth for p in ctx.pools},
            {p.name: p.in_flight for p in ctx.pools}, num_moves))

    def to_dict(self) -> dict[str, Any]:
        pools = list(self.samples[0].engines) if self.samples else []
        return {
            "t": [round(s.t, 3) for s in self.samples],
            "pools": {p: {"engines": [s.engines.get(p, 0) for s in self.samples],
                          "queued": [s.queued.get(p, 0) for s in self.samples],
                          "in_flight": [s.in_flight.get(p, 0) for s in self.samples]}
                      for p in pools},
            "moves": [s.num_moves for s in self.samples],
        }


def slo_series(runs: Sequence[Run], bin_s: float) -> dict[str, list[float]]:
    """SLO attainment of the runs that *arrived* in each ``bin_s`` window."""
    if not runs:
        return {"t": [], "slo_attainment": []}
    start = min(r.arrival for r in runs)
    num_bins = int((max(r.arrival for r in runs) - start) // bin_s) + 1
    met, total = [0] * num_bins, [0] * num_bins
    for run in runs:
        i = int((run.arrival - start) // bin_s)
        total[i] += 1
        met[i] += run.met_slo
    return {"t": [round(start + i * bin_s, 3) for i in range(num_bins)],
            "slo_attainment": [round(m / n, 4) if n else 0.0 for m, n in zip(met, total)]}


def plot_timeline(path: str | Path, timeline: dict[str, Any],
                  slo: dict[str, dict[str, list[float]]], title: str = "",
                  phases: Sequence[tuple[float, str]] = ()) -> Path:
    """Three panels: engines per pool, calls in each pool (queued + in flight),
    and SLO attainment over time of every policy in ``slo``.

    Args:
        timeline: ``Timeline.to_dict()`` of the malleable run.
        slo: policy -> ``slo_series(...)``.
        phases: (time, label) marks drawn as vertical lines (workload shifts).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    t = timeline["t"]
    for name, series in timeline["pools"].items():
        axes[0].step(t, series["engines"], where="post", label=name)
        calls = [q + f for q, f in zip(series["queued"], series["in_flight"])]
        axes[1].plot(t, calls, label=name)
    for policy, series in slo.items():
        axes[2].plot(series["t"], series["slo_attainment"], label=policy)
    labels = ("engines per pool", "calls in pool", "SLO attainment")
    for ax, label in zip(axes, labels):
        ax.set_ylabel(label)
        ax.legend(loc="best", fontsize=8)
        for x, _ in phases:
            ax.axvline(x, color="grey", linestyle=":", linewidth=1)
    axes[2].set_xlabel("time (s)")
    axes[2].set_ylim(-0.02, 1.02)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out

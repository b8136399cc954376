"""`cortex bench --seeds`: the same comparison on several traces, and how much it varies.

One seed is one trace. Near saturation a policy's goodput can swing by a third between
traces (a backlog that tips a slack-ordered pool into serving only late calls, or not),
so a ratio quoted from one seed can be luck. ``combine_seeds`` keeps every seed's report
and adds the mean row per (policy, rate) and the per-seed goodput ratios of the policy
under test (the last in ``--policies``) to each of the others.
"""
from __future__ import annotations

from statistics import fmean
from typing import Any

from cortex.bench.metrics import RESULT_KEYS


def combine_seeds(seeds: list[int], reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from ``reports[i]`` run with ``seeds[i]``: ``results`` are the means
    over seeds (same keys as one seed's rows), ``per_seed`` the reports themselves,
    ``seed_summary`` goodput per seed and ratios per rate."""
    if not reports or len(seeds) != len(reports):
        raise ValueError("combine_seeds: one report per seed")
    config = {k: v for k, v in reports[0]["config"].items() if k != "seed"} | {"seeds": seeds}
    policies = list(dict.fromkeys(r["policy"] for r in reports[0]["results"]))
    rates = list(dict.fromkeys(r["rate"] for r in reports[0]["results"]))
    rows = {(r["policy"], r["rate"], i): r for i, rep in enumerate(reports)
            for r in rep["results"]}
    missing = [(p, rate, seeds[i]) for p in policies for rate in rates
               for i in range(len(seeds)) if (p, rate, i) not in rows]
    if missing:
        raise ValueError(f"combine_seeds: no result for (policy, rate, seed) {missing[0]}")
    results, summary = [], []
    for rate in rates:
        goodput = {}
        for p in policies:
            runs = [rows[(p, rate, i)] for i in range(len(seeds))]
            results.append(_mean_row(runs))
            goodput[p] = [r["goodput_rps"] for r in runs]
        summary.append({"rate": rate, "subject": policies[-1], "goodput": goodput,
                        "ratios": _ratios(policies[-1], goodput, rate)})
    return {"config": config, "results": results, "seed_summary": summary,
            "per_seed": [{"seed": s} | rep for s, rep in zip(seeds, reports)]}


def _mean_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    row = {"policy": runs[0]["policy"], "rate": runs[0]["rate"]}
    for key in RESULT_KEYS:
        if key in row:
            continue
        values = [r[key] for r in runs if r.get(key) is not None]
        row[key] = fmean(values) if values else None
    return row


def _ratios(subject: str, goodput: dict[str, list[float]], rate: float
            ) -> dict[str, dict[str, Any]]:
    """The subject's goodput over each other policy's, per seed and of the means, and
    ``ceiling``: the most any policy could reach over that one (goodput cannot exceed
    the arrival rate), so a ratio can be read against what was there to win."""
    out = {}
    for other, theirs in goodput.items():
        if other == subject:
            continue
        per_seed = [a / b if b else None for a, b in zip(goodput[subject], theirs)]
        known = [x for x in per_seed if x is not None]
        their_mean = fmean(theirs)
        out[other] = {"per_seed": per_seed,
                      "of_means": fmean(goodput[subject]) / their_mean if their_mean else None,
                      "min": min(known, default=None), "max": max(known, default=None),
                      "ceiling": rate / their_mean if their_mean else None}
    return out


def render_seed_summary(report: dict[str, Any]) -> str:
    """Goodput per seed (mean, min, max) and the subject's ratios, as plain text."""
    seeds = report["config"]["seeds"]
    lines = []
    for block in report["seed_summary"]:
        width = max(len(p) for p in block["goodput"])
        lines.append(f"goodput at {block['rate']:g} runs/s, seeds "
                     + ", ".join(str(s) for s in seeds))
        for policy, values in block["goodput"].items():
            lines.append(f"  {policy:>{width}}  " + "  ".join(f"{v:8.3f}" for v in values)
                         + f"   mean {fmean(values):.3f}  min {min(values):.3f}"
                         f"  max {max(values):.3f}")
        for other, r in block["ratios"].items():
            if r["of_means"] is None:
                continue
            lines.append(f"  {block['subject']} / {other}: {r['of_means']:.2f}x of the means, "
                         f"per seed {r['min']:.2f}x .. {r['max']:.2f}x (at most "
                         f"{r['ceiling']:.2f}x: goodput <= the arrival rate)")
    return "\n".join(lines)

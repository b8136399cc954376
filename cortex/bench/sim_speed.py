"""Control-plane speed of the simulator: stage calls processed per minute of wall
time on one core (target >= 100,000). Prints the figure and writes JSON.

    python -m cortex.bench.sim_speed [--requests 20000] [--out out/sim_speed.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cortex.bench.sim_bench import SimBenchConfig, run_policy


def measure(policy: str, num_requests: int, rate: float, engines: int) -> dict[str, float]:
    cfg = SimBenchConfig(policies=[policy], rates=[rate], num_requests=num_requests,
                         num_engines=engines)
    started = time.perf_counter()
    row, sim = run_policy(cfg, policy, rate)
    wall = time.perf_counter() - started
    calls = sum(1 for r in sim.finished for t in r.trace if t.ran)
    return {"policy": policy, "runs": num_requests, "stage_calls": calls,
            "events": sim.num_events, "wall_s": round(wall, 3),
            "stage_calls_per_min": round(calls / wall * 60),
            "completed": row["completed"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--engines", type=int, default=16)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    rows = [measure(policy, args.requests, args.rate, args.engines)
            for policy in ("shared-fcfs", "shared-prefix", "cortex")]
    for row in rows:
        print(f"{row['policy']:>14}: {row['stage_calls']} stage calls in {row['wall_s']} s "
              f"-> {row['stage_calls_per_min']:,} stage calls/min (target >= 100,000)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

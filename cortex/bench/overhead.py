"""Control-plane overhead: the time Cortex adds per stage call beyond engine time.

    python -m cortex.bench.overhead [--concurrency 100,500] [--stages 4] [--out FILE]

A chain workflow of LLM stages runs on zero-cost ``null`` engines (a call
returns at once, without yielding to the event loop), in a closed loop that
keeps N runs in flight. Everything measured is therefore Cortex: orchestrator,
scheduler, router, controller and the asyncio runtime. Per stage call:

* ``decision_ms``: from the previous call's completion (or the run's
  submission) to this call being handed to its engine. The runtime does this
  work synchronously, so it is pure control-plane CPU time per call.
* ``added_latency_ms``: from the previous completion (or submission) to this
  call's completion, minus engine time: the decision time plus the wait for
  the event loop, which grows with the number of runs in flight.
* ``stage_calls_per_s``: throughput; ``cost_ms_per_call`` = wall time / calls.

With ``--http`` it also drives ``cortex serve`` in a subprocess on loopback
(``POST /v1/runs`` with ``wait`` over keep-alive connections from a bare asyncio
client) and reports runs/s and request latency: the HTTP layer's cost per run
on top of the figures above.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cortex.config import CortexConfig, parse_config
from cortex.runtime.build import build_runtime
from cortex.runtime.realtime import RealtimeRuntime
from cortex.workflow import CompiledWorkflow, WorkflowBuilder, compile_workflow

DEFAULT_OUT = Path("out/bench/overhead.json")


def chain_workflow_spec(num_stages: int) -> dict[str, Any]:
    """``s0 -> s1 -> ... -> s{n-1}``, each an LLM stage with its own short prompt."""
    wf = WorkflowBuilder("chain", inputs=["question"], output=f"s{num_stages - 1}")
    for i in range(num_stages):
        source = "{{ question }}" if i == 0 else f"{{{{ s{i - 1}.text }}}}"
        stage = wf.llm(f"s{i}", system=f"You are stage {i}.", user=f"Step {i}: {source}",
                       max_tokens=8)
        if i + 1 < num_stages:
            stage.then(f"s{i + 1}")
    return wf.spec


def chain_workflow(num_stages: int) -> CompiledWorkflow:
    return compile_workflow(chain_workflow_spec(num_stages), source="<overhead bench>")


def bench_config(num_stages: int, num_engines: int, policy: str) -> CortexConfig:

    cfg = parse_config({"policy": policy, "workflows": [], "max_queue": 1 << 20,
                        "engines": [{"backend": "null", "count": num_engines,
                                     "max_concurrency": 4096}]}, source="<overhead bench>")
    cfg.workflows = [chain_workflow(num_stages)]
    return cfg


@dataclass(slots=True)
class Recorder:
    """A runtime listener keeping the timestamps the figures need."""

    submitted: dict[str, float] = field(default_factory=dict)
    last_done: dict[str, float] = field(default_factory=dict)
    decision_s: list[float] = field(default_factory=list)
    added_s: list[float] = field(default_factory=list)
    num_calls: int = 0

    def __call__(self, event: dict[str, Any]) -> None:
        kind, run_id, t = event["type"], event["run_id"], event["t"]
        if kind == "call_started":
            self.decision_s.append(t - self.last_done.get(run_id, self.submitted[run_id]))
        elif kind == "call_finished":
            previous = self.last_done.get(run_id, self.submitted[run_id])
            self.added_s.append(t - previous - (event["service_s"] or 0.0))
            self.last_done[run_id] = t
            self.num_calls += 1
        elif kind == "run_finished":
            self.last_done.pop(run_id, None)
            self.submitted.pop(run_id, None)

    def reset(self) -> None:
        self.decision_s.clear()
        self.added_s.clear()
        self.num_calls = 0


async def closed_loop(runtime: RealtimeRuntime, recorder: Recorder, concurrency: int,
                      num_runs: int, prefix: str) -> int:
    """Keep ``concurrency`` runs in flight until ``num_runs`` were admitted; returns failures."""
    counter = iter(range(num_runs))
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for n in counter:
            run_id = f"{prefix}{n}"
            recorder.submitted[run_id] = runtime.clock()
            runtime.submit("chain", {"question": f"question {n}"}, run_id=run_id)
            run = await runtime.wait(run_id)
            failures += run.status.value != "succeeded"
            runtime.controller.orchestrator.forget(run_id)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failures


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return round(1000.0 * ordered[min(len(ordered) - 1, int(q / 100.0 * len(ordered)))], 4)


async def measure(concurrency: int, num_runs: int, num_stages: int, num_engines: int,
                  policy: str) -> dict[str, Any]:
    runtime = await build_runtime(bench_config(num_stages, num_engines, policy))
    recorder = Recorder()
    runtime.listeners.append(recorder)
    try:
        await closed_loop(runtime, recorder, concurrency, min(num_runs, 2 * concurrency),
                          "warm-")
        recorder.reset()
        started = time.perf_counter()
        failures = await closed_loop(runtime, recorder, concurrency, num_runs, "r-")
        wall = time.perf_counter() - started
    finally:
        await runtime.close()
    calls = recorder.num_calls
    return {
        "concurrency": concurrency, "runs": num_runs, "failed_runs": failures,
        "stage_calls": calls, "wall_s": round(wall, 3),
        "stage_calls_per_s": round(calls / wall, 1), "runs_per_s": round(num_runs / wall, 1),
        "cost_ms_per_call": round(1000.0 * wall / max(1, calls), 4),
        "decision_ms": {"p50": _ms(recorder.decision_s, 50), "p99": _ms(recorder.decision_s, 99),
                        "mean": round(1000.0 * sum(recorder.decision_s)
                                      / max(1, len(recorder.decision_s)), 4)},
        "added_latency_ms": {"p50": _ms(recorder.added_s, 50),
                             "p99": _ms(recorder.added_s, 99)},
    }


async def _post_loop(host: str, port: int, body: bytes, counter: Any,
                     latencies: list[float]) -> None:
    """One keep-alive HTTP/1.1 connection posting ``body`` until ``counter`` runs out.

    A bare asyncio client: the load generator must cost far less than the server,
    which httpx (pure Python, ~1 ms per request) does not."""
    reader, writer = await asyncio.open_connection(host, port)
    request = (f"POST /v1/runs HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json"
               f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    try:
        for _ in counter:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"server answered {head.splitlines()[0]!r}")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


def _serve_subprocess(num_stages: int, num_engines: int, policy: str, workdir: Path
                      ) -> tuple[Any, str, int]:
    import subprocess
    import sys

    import yaml

    (workdir / "chain.yaml").write_text(yaml.safe_dump(chain_workflow_spec(num_stages)))
    (workdir / "cortex.yaml").write_text(yaml.safe_dump({
        "policy": policy, "workflows": ["chain.yaml"], "max_queue": 1 << 20,
        "engines": [{"backend": "null", "count": num_engines, "max_concurrency": 4096}],
        "server": {"host": "127.0.0.1", "port": 0}}))
    proc = subprocess.Popen([sys.executable, "-m", "cortex.cli", "serve", "--config",
                             str(workdir / "cortex.yaml"), "--log-level", "error"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first = proc.stdout.readline()
    if "listening on " not in first:
        proc.kill()
        raise RuntimeError(f"cortex serve did not start: {first!r}")
    url = first.split("listening on ")[1].split()[0]
    host, port = url.removeprefix("http://").rsplit(":", 1)
    _wait_ready(url)
    return proc, host, int(port)


def _wait_ready(url: str, timeout_s: float = 60.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(f"{url}/readyz", timeout=1)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} not ready after {timeout_s:g} s") from None
            time.sleep(0.05)


async def measure_http(concurrency: int, num_runs: int, num_stages: int, num_engines: int,
                       policy: str) -> dict[str, Any]:
    """Closed loop of ``POST /v1/runs`` (``wait``) against ``cortex serve`` in a subprocess."""
    import signal
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        proc, host, port = _serve_subprocess(num_stages, num_engines, policy, Path(tmp))
        try:
            body = json.dumps({"workflow": "chain", "inputs": {"question": "q"},
                               "wait": True}).encode()
            latencies: list[float] = []
            counter = iter(range(num_runs))
            started = time.perf_counter()
            await asyncio.gather(*(_post_loop(host, port, body, counter, latencies)
                                   for _ in range(concurrency)))
            wall = time.perf_counter() - started
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    return {"concurrency": concurrency, "runs": num_runs, "wall_s": round(wall, 3),
            "runs_per_s": round(num_runs / wall, 1),
            "stage_calls_per_s": round(num_runs * num_stages / wall, 1),
            "request_latency_ms": {"p50": _ms(latencies, 50), "p99": _ms(latencies, 99)}}


def _print(level: dict[str, Any]) -> None:
    d, a = level["decision_ms"], level["added_latency_ms"]
    print(f"{level['concurrency']:>5} runs in flight: {level['stage_calls_per_s']:>8.0f} "
          f"stage calls/s | decision p50 {d['p50']:.3f} ms p99 {d['p99']:.3f} ms | "
          f"cost/call {level['cost_ms_per_call']:.3f} ms | added latency p50 {a['p50']:.1f} ms "
          f"p99 {a['p99']:.1f} ms")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cortex.bench.overhead", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", default="100,500", help="comma-separated runs in flight")
    p.add_argument("--runs", type=int, default=0,
                   help="runs per level (default: 20x concurrency, at least 10000; over "
                        "HTTP 10x, at least 3000)")
    p.add_argument("--stages", type=int, default=4, help="LLM stages per run")
    p.add_argument("--engines", type=int, default=4, help="null engines (>= stages)")
    p.add_argument("--policy", default="cortex")
    p.add_argument("--http", action="store_true", help="also measure through the HTTP server")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    levels, http_levels = [], []
    for concurrency in (int(x) for x in args.concurrency.split(",") if x.strip()):
        num_runs = args.runs or max(10_000, 20 * concurrency)
        levels.append(asyncio.run(measure(concurrency, num_runs, args.stages, args.engines,
                                          args.policy)))
        _print(levels[-1])
        if args.http:
            num_http = args.runs or max(3000, 10 * concurrency)
            http_levels.append(asyncio.run(measure_http(concurrency, num_http, args.stages,
                                                        args.engines, args.policy)))
            h = http_levels[-1]
            print(f"{concurrency:>5} over HTTP:     {h['runs_per_s']:>8.0f} runs/s "
                  f"({h['stage_calls_per_s']:.0f} stage calls/s) | request p50 "
                  f"{h['request_latency_ms']['p50']:.1f} ms p99 "
                  f"{h['request_latency_ms']['p99']:.1f} ms")
    report = {"benchmark": "control-plane overhead", "engine": "null (zero-cost)",
              "policy": args.policy, "stages_per_run": args.stages, "engines": args.engines,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()}, "levels": levels,
              "http_levels": http_levels}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

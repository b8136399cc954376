"""Graceful shutdown of a real `cortex serve` process on SIGTERM, with runs in flight."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from cortex.client import CortexClient
from tests.server.helpers import REPO, is_ready, wait_until, write_config

BODY = {"workflow": "chain", "inputs": {"question": "q"}}


@contextmanager
def serve_process(config: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """``cortex serve --port 0`` in a subprocess; yields it and its URL once ready."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "cortex.cli", "serve", "--config",
                             str(config), "--log-level", "warning"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        match = re.search(r"listening on (http://\S+)", line)
        assert match, f"unexpected first line: {line!r}"
        url = match.group(1)
        wait_until(lambda: is_ready(url), timeout_s=20)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _start_waiters(url: str, run_ids: list[str]) -> tuple[dict, list[threading.Thread]]:
    """One thread waits with `wait: true`, one follows each run's events."""
    results: dict = {"events": {}}

    def wait_run() -> None:
        with CortexClient(url) as client:
            results["waited"] = client.run("chain", {"question": "q"}, wait=True)

    def follow(run_id: str) -> None:
        with CortexClient(url) as client:
            results["events"][run_id] = list(client.events(run_id))

    threads = [threading.Thread(target=wait_run)]
    threads += [threading.Thread(target=follow, args=(rid,)) for rid in run_ids]
    for thread in threads:
        thread.start()
    return results, threads


def _in_flight(http: httpx.Client, count: int) -> bool:
    pools = http.get("/v1/pools").json()["pools"]
    return sum(p["in_flight"] for p in pools) >= count


def _refuses_new_runs(http: httpx.Client) -> bool:
    response = http.post("/v1/runs", json=BODY)
    return response.status_code == 503 and response.json()["error"]["code"] == "draining"


def test_sigterm_lets_in_flight_runs_finish(tmp_path: Path) -> None:
    config = write_config(tmp_path, engine={"delay_ms": 700}, server={"grace_s": 10})
    with serve_process(config) as (proc, url), httpx.Client(base_url=url) as http:
        run_ids = [http.post("/v1/runs", json=BODY).json()["run_id"] for _ in range(3)]
        results, threads = _start_waiters(url, run_ids)
        wait_until(lambda: _in_flight(http, 4))
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: _refuses_new_runs(http))
        assert http.get("/readyz").status_code == 503
        assert http.get(f"/v1/runs/{run_ids[0]}").status_code == 200  # still readable
        for thread in threads:
            thread.join(15)
        assert proc.wait(15) == 0
        output = proc.stdout.read()
    assert results["waited"]["status"] == "succeeded"
    for run_id in run_ids:
        assert results["events"][run_id][-1]["status"] == "succeeded"
    drained = re.search(r"drained: (\d+) finished, (\d+) cancelled", output)
    assert drained and int(drained.group(1)) >= 4 and drained.group(2) == "0"


def test_sigterm_cancels_what_outlives_the_grace_period(tmp_path: Path) -> None:
    config = write_config(tmp_path, engine={"delay_ms": 30000}, server={"grace_s": 0.3})
    with serve_process(config) as (proc, url), httpx.Client(base_url=url) as http:
        run_ids = [http.post("/v1/runs", json=BODY).json()["run_id"] for _ in range(2)]
        results, threads = _start_waiters(url, run_ids)
        wait_until(lambda: _in_flight(http, 3))
        proc.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(15)
        assert proc.wait(15) == 0
        output = proc.stdout.read()
    waited = results["waited"]
    assert waited["status"] == "cancelled" and waited["reason"].startswith("server shutting down")
    for run_id in run_ids:
        final = results["events"][run_id][-1]
        assert final["type"] == "run_finished" and final["status"] == "cancelled"
        assert [e["type"] for e in results["events"][run_id]][-2] == "call_cancelled"
    assert "drained: 0 finished, 3 cancelled" in output


def test_sigterm_drains_when_stdout_is_a_closed_pipe(tmp_path: Path) -> None:
    """`cortex serve ... | head -2`: once head has exited, printing the `draining` line
    raises BrokenPipeError; the first SIGTERM must still drain and stop the server."""
    config = write_config(tmp_path, engine={"delay_ms": 1000}, server={"grace_s": 10})
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with (tmp_path / "stderr.txt").open("w+") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "cortex.cli", "serve", "--config",
                                 str(config), "--log-level", "warning"], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=stderr, text=True)
        try:
            lines = [proc.stdout.readline(), proc.stdout.readline()]  # head -2
            assert "listening on" in lines[0] and "ready" in lines[1], lines
            url = re.search(r"listening on (http://\S+)", lines[0]).group(1)
            proc.stdout.close()  # head exits: the pipe's reader is gone
            with httpx.Client(base_url=url) as http:
                run_id = http.post("/v1/runs", json=BODY).json()["run_id"]
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(15) == 0  # before: up until a second signal
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        stderr.seek(0)
        log = stderr.read()
    assert "could not announce 'draining" in log and "BrokenPipeError" in log
    assert "drained: 1 finished, 0 cancelled" in log  # the run admitted before the signal
    assert "cortex serve: stopped" in log and run_id

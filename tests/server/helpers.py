"""Shared helpers for the server tests: configs on disk and real servers on loopback ports.

Servers run the real app under uvicorn on a thread (its own event loop) or, for
signal tests, as a ``cortex serve`` subprocess. Engines are the zero-cost
``null`` backend unless a test says otherwise.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from cortex.config import load_config
from cortex.engine.base import BaseEngine
from cortex.server.serve import CortexServer, run_in_thread

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "out" / "test-artifacts"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium"
                                        if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_SKIP_REASON = "" if CHROMIUM else (
    "chromium is not installed: run scripts/install-chromium.sh (apt-get install chromium) "
    "to enable the dashboard browser tests")

CHAIN = {
    "name": "chain",
    "description": "two LLM stages",
    "inputs": ["question"],
    "output": "answer",
    "stages": [
        {"name": "draft", "llm": {"system": "You draft.", "user": "Draft: {{ question }}",
                                  "max_tokens": 16}, "next": "answer"},
        {"name": "answer", "llm": {"system": "You answer.", "user": "Answer: {{ draft.text }}",
                                   "max_tokens": 16}},
    ],
}
# Succeeds only when the engine answers something: an empty answer has no edge.
STRICT = {
    "name": "strict",
    "inputs": ["question"],
    "output": "draft",
    "stages": [{"name": "draft", "llm": {"user": "{{ question }}", "max_tokens": 8},
                "next": [{"when": "ok", "goto": "$end"}]}],
}


def write_config(tmp_path: Path, workflows: list[dict[str, Any]] | None = None,
                 engine: dict[str, Any] | None = None, **top: Any) -> Path:
    """Write workflow files and a config using them; returns the config path."""
    names = []
    for wf in workflows or [CHAIN]:
        (tmp_path / f"{wf['name']}.yaml").write_text(yaml.safe_dump(wf))
        names.append(f"{wf['name']}.yaml")
    data: dict[str, Any] = {"policy": "cortex", "workflows": names,
                            "engines": [{"backend": "null", "count": 2, "text": "hello world",
                                         **(engine or {})}],
                            "server": {"host": "127.0.0.1", "port": 0}}
    server = top.pop("server", {})
    data["server"].update(server)
    data.update(top)
    path = tmp_path / "cortex.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def wait_until(predicate: Any, timeout_s: float = 10.0, every_s: float = 0.02) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(every_s)


def is_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def running_server(config: Path, wait_ready: bool = True,
                   engines: dict[str, BaseEngine] | None = None) -> Iterator[CortexServer]:
    """A real server on a free loopback port, on a thread; stopped (and drained) on exit."""
    server = CortexServer(load_config(config), log_level="warning", engines=engines)
    thread = run_in_thread(server)
    try:
        if wait_ready:
            wait_until(lambda: is_ready(server.url))
        yield server
    finally:
        server.request_exit()
        thread.join(10)
        assert not thread.is_alive(), "server thread did not stop"


def null_engines(server: CortexServer) -> list[Any]:
    return list(server.service.runtime.engines.values())


def chromium(url: str, user_data: Path, *args: str, budget_ms: int = 3500
             ) -> subprocess.CompletedProcess:
    """Headless chromium; ``--virtual-time-budget`` lets the page's timers poll a few times."""
    assert CHROMIUM is not None, CHROMIUM_SKIP_REASON
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={user_data}",
             "--window-size=1280,900", f"--virtual-time-budget={budget_ms}"]
    return subprocess.run([CHROMIUM, *flags, *args, url], capture_output=True, text=True,
                          timeout=90, check=False)


def dom_cell(dom: str, row: str, cls: str) -> str:
    """Text of the ``<td class="num {cls}">`` cell in the dashboard row ``<tr {row}>``."""
    match = re.search(rf'<tr {row}>.*?<td class="num {cls}">([^<]*)</td>', dom, re.DOTALL)
    assert match, f"no {cls} cell in row {row}"
    return match.group(1)

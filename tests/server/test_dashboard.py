"""The live dashboard in a real browser: Debian's chromium, headless, against a
running server with real runs. Installed by scripts/install-chromium.sh."""
from __future__ import annotations

import re
import threading
from pathlib import Path

import httpx
import pytest

from tests.server.helpers import (
    ARTIFACTS,
    CHROMIUM_SKIP_REASON,
    chromium,
    dom_cell,
    running_server,
    write_config,
)

pytestmark = pytest.mark.skipif(bool(CHROMIUM_SKIP_REASON), reason=CHROMIUM_SKIP_REASON)


def test_dashboard_shows_live_figures(tmp_path: Path) -> None:
    config = write_config(tmp_path, engine={"delay_ms": 20, "max_concurrency": 1})
    with running_server(config) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        for i in range(12):
            http.post("/v1/runs", json={"workflow": "chain", "inputs": {"question": f"{i}"},
                                        "wait": True})
        http.post("/v1/chat/completions", json={"model": "draft", "messages": [
            {"role": "user", "content": "hi"}]})
        stop = threading.Event()
        load = [threading.Thread(target=_background_load, args=(server.url, stop))
                for _ in range(3)]
        for thread in load:
            thread.start()
        try:
            dom = chromium(f"{server.url}/", tmp_path / "profile-dom", "--dump-dom").stdout
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / "dashboard.png"
            shot.unlink(missing_ok=True)
            chromium(f"{server.url}/", tmp_path / "profile-shot", f"--screenshot={shot}")
        finally:
            stop.set()
            for thread in load:
                thread.join(10)
        finished = http.get("/v1/dashboard").json()["runs"]["5m"]["finished"]
    updates = int(re.search(r'<body data-updates="(\d+)"', dom).group(1))
    assert updates >= 2, "the page did not refresh itself"
    assert '<span id="state" class="badge ready">ready</span>' in dom
    for pool in ("draft", "answer"):
        assert f'<tr data-pool="{pool}">' in dom and "null-" in dom
        calls = int(dom_cell(dom, f'data-pool="{pool}"', "calls"))
        assert calls >= 12
    shown = int(dom_cell(dom, 'data-window="5m"', "finished"))
    assert 13 <= shown <= finished
    assert dom_cell(dom, 'data-window="5m"', "p50").endswith("ms")
    assert dom_cell(dom, 'data-window="5m"', "slo") == "100.0 %"
    assert 'data-workflow="chain"' in dom
    assert shot.exists() and shot.stat().st_size > 10_000


def _background_load(url: str, stop: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:
        while not stop.is_set():
            http.post("/v1/runs", json={"workflow": "chain", "inputs": {"question": "bg"},
                                        "wait": True})

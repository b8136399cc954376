"""Metrics, health, readiness, pools, workflows and the dashboard's JSON and page."""
from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from cortex.engine.null import NullConfig, NullEngine
from tests.server.helpers import running_server, wait_until, write_config


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_in_prometheus_format(http: httpx.Client) -> None:
    for i in range(3):
        http.post("/v1/runs", json={"workflow": "chain", "inputs": {"question": f"{i}"},
                                    "wait": True})
    response = http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith(
        "text/plain")
    samples = _samples(response.text)

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset(labels.items()))]

    for pool in ("draft", "answer"):
        assert value("cortex_stage_calls_total", pool=pool, stage=pool, outcome="ok") >= 3
        assert value("cortex_stage_queue_wait_seconds_count", pool=pool, stage=pool) >= 3
        assert value("cortex_stage_service_seconds_count", pool=pool, stage=pool) >= 3
        assert value("cortex_prompt_tokens_total", pool=pool) > 0
        assert value("cortex_cached_prompt_tokens_total", pool=pool) == 0
        assert value("cortex_pool_queue_depth", pool=pool) == 0
        assert value("cortex_pool_max_queue", pool=pool) == 256
    assert value("cortex_engine_healthy", pool="draft", engine="null-0") == 1
    assert ("cortex_engine_utilisation", frozenset({"pool": "draft", "engine": "null-0"}.items())
            ) in samples
    assert value("cortex_runs_total", workflow="chain", status="succeeded") >= 3
    assert value("cortex_run_latency_seconds_count", workflow="chain") >= 3
    assert value("cortex_slo_attainment_ratio", workflow="chain") == 1.0
    assert value("cortex_server_ready") == 1


def test_health_pools_workflows(http: httpx.Client) -> None:
    assert http.get("/healthz").json()["state"] == "ready"
    assert http.get("/readyz").json() == {"ready": True, "state": "ready", "reason": "ready"}
    http.post("/v1/runs", json={"workflow": "chain", "inputs": {"question": "q"}, "wait": True})
    pools = {p["name"]: p for p in http.get("/v1/pools").json()["pools"]}
    assert set(pools) == {"draft", "answer"}
    draft = pools["draft"]
    assert draft["engines"] == [{"id": "null-0", "healthy": True, "in_flight": 0,
                                 "utilisation": draft["engines"][0]["utilisation"],
                                 "home": "draft", "borrowed": False, "draining": False,
                                 "pending": None}]
    for key in ("queue_depth", "in_flight", "capacity", "utilisation", "prefix_hit_rate",
                "slo_attainment", "num_calls"):
        assert key in draft
    assert draft["num_calls"] >= 1 and draft["slo_attainment"] == 1.0
    (workflow,) = http.get("/v1/workflows").json()["workflows"]
    assert workflow["name"] == "chain" and workflow["inputs"] == ["question"]
    assert [(s["name"], s["pool"]) for s in workflow["stages"]] == [("draft", "draft"),
                                                                    ("answer", "answer")]


def test_dashboard_page_is_self_contained(http: httpx.Client) -> None:
    page = http.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(a.startswith("/static/") for a in assets)  # no CDN
    for asset in assets:
        body = http.get(asset)
        assert body.status_code == 200 and "http://" not in body.text \
            and "https://" not in body.text
    data = http.get("/v1/dashboard").json()
    assert data["ready"] and {"1m", "5m"} <= set(data["runs"]) and data["history"]
    assert {p["name"] for p in data["pools"]} == {"draft", "answer"}


class SlowStartEngine(NullEngine):
    def __init__(self, engine_id: str) -> None:
        super().__init__(engine_id, NullConfig())
        self.release = False

    async def start(self) -> None:
        while not self.release:
            await asyncio.sleep(0.02)


def test_not_ready_until_engines_are_up(tmp_path: Path) -> None:
    engines = {f"slow-{i}": SlowStartEngine(f"slow-{i}") for i in range(2)}
    with running_server(write_config(tmp_path), wait_ready=False, engines=engines) as server, \
            httpx.Client(base_url=server.url) as http:
        wait_until(lambda: _answers(http))
        assert http.get("/healthz").json()["state"] == "starting"
        assert http.get("/readyz").status_code == 503
        starting = http.post("/v1/runs", json={"workflow": "chain", "inputs": {"question": "q"}})
        assert starting.status_code == 503 and starting.json()["error"]["code"] == "starting"
        assert "retry-after" in starting.headers
        for engine in engines.values():
            engine.release = True
        wait_until(lambda: http.get("/readyz").status_code == 200)


def _answers(http: httpx.Client) -> bool:
    try:
        return http.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False


def test_engine_start_failure_stops_the_server(tmp_path: Path, capsys) -> None:
    from cortex.cli import main as cli_main

    config = write_config(tmp_path)
    config.write_text(config.read_text().replace("backend: 'null'", "backend: llamacpp")
                      .replace("text: hello world", "model: /no/such/model.gguf"))
    assert cli_main(["serve", "--config", str(config), "--log-level", "critical"]) == 2
    err = capsys.readouterr().err
    assert "engines[0]" in err and "failed to start" in err, err

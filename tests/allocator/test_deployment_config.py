"""The deployment config's ``allocator:`` section: parsing, errors naming the field,
and the wiring of the allocator and its scale-out provider into the runtime."""
from __future__ import annotations

import asyncio
import os

import pytest
import yaml

from cortex.allocator import Decision, DecisionKind
from cortex.allocator.scaling import AsyncEngineProvider
from cortex.config import ConfigError, load_config, parse_config
from cortex.engine.null import NullEngine
from cortex.engine.openai_remote import OpenAIRemoteEngine
from cortex.runtime.build import build_runtime, make_allocator, scale_out_budget
from tests.factories import llama_servers

WF = {"name": "w", "inputs": ["q"], "stages": [
    {"name": "gen", "llm": {"user": "{{ q }}", "max_tokens": 8}, "next": "fix"},
    {"name": "fix", "llm": {"user": "fix {{ q }}", "max_tokens": 8}}]}


def _data(tmp_path, allocator=None, engines=None, policy="cortex-malleable"):
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(WF))
    data = {"policy": policy, "workflows": [str(path)],
            "engines": engines or [{"backend": "null", "count": 2, "text": "ok"}]}
    if allocator is not None:
        data["allocator"] = allocator
    return data


def test_section_sets_the_allocator_config(tmp_path):
    cfg = parse_config(_data(tmp_path, {"policy": "static", "interval_s": 0.5,
                                        "cold_window_s": 0, "load_alpha": 0.25,
                                        "cost_window_s": 60, "workflow_demand": False}))
    section = cfg.allocator
    assert section is not None and section.template is None and section.max_engines is None
    c = section.config
    assert (c.policy, c.interval_s, c.cold_window_s, c.load_alpha, c.cost_window_s,
            c.workflow_demand) == ("static", 0.5, 0.0, 0.25, 60.0, False)
    options = parse_config(_data(tmp_path, {"options": {"min_dwell_s": 5, "warmup_s": 0}}))
    assert options.allocator.config.policy == "slo-pressure"
    assert options.allocator.config.policy_options == {"min_dwell_s": 5, "warmup_s": 0}
    assert options.allocator.config.workflow_demand is True  # the default
    assert parse_config(_data(tmp_path)).allocator is None


OPENAI = [{"backend": "openai", "urls": ["http://127.0.0.1:1"], "model": "m"}]


@pytest.mark.parametrize("allocator, engines, policy, where, what", [
    ({}, None, "cortex", "allocator", "only policy: cortex-malleable"),
    ([1], None, "cortex-malleable", "allocator", "must be a mapping"),
    ({"intervall_s": 1}, None, "cortex-malleable", "allocator.intervall_s", "unknown field"),
    ({"policy": "magic"}, None, "cortex-malleable", "allocator.policy",
     "unknown allocation policy 'magic'"),
    ({"options": {"hysterisis": 0.1}}, None, "cortex-malleable",
     "allocator.options.hysterisis", "unknown option"),
    ({"policy": "static", "options": {"min_dwell_s": 5}}, None, "cortex-malleable",
     "allocator.options.min_dwell_s", "its options: none"),
    ({"options": {"hysteresis": -1}}, None, "cortex-malleable", "allocator.options",
     "hysteresis"),
    ({"options": [1]}, None, "cortex-malleable", "allocator.options", "must be a mapping"),
    ({"interval_s": 0}, None, "cortex-malleable", "allocator.interval_s", "positive"),
    ({"interval_s": True}, None, "cortex-malleable", "allocator.interval_s", "positive"),
    ({"interval_s": float("inf")}, None, "cortex-malleable", "allocator.interval_s",
     "positive"),
    ({"load_alpha": 2}, None, "cortex-malleable", "allocator.load_alpha", "(0, 1]"),
    ({"cold_window_s": -1}, None, "cortex-malleable", "allocator.cold_window_s", ">= 0"),
    ({"workflow_demand": "yes"}, None, "cortex-malleable", "allocator.workflow_demand",
     "true or false"),
    ({"max_engines": 1}, None, "cortex-malleable", "allocator.max_engines",
     ">= the 2 configured engines"),
    ({"max_engines": "4"}, None, "cortex-malleable", "allocator.max_engines", "integer"),
    ({"standby_urls": "http://x"}, None, "cortex-malleable", "allocator.standby_urls",
     "list of server base URLs"),
    ({"standby_urls": ["http://x"]}, None, "cortex-malleable", "allocator.standby_urls",
     "no engine group uses it"),
    ({"max_engines": 2}, OPENAI, "cortex-malleable", "allocator.standby_urls",
     "cannot start servers"),
    ({"max_engines": 4, "standby_urls": ["http://a"]}, OPENAI, "cortex-malleable",
     "allocator.max_engines", "need 3 standby URLs"),
])
def test_bad_allocator_section_names_the_file_and_field(tmp_path, allocator, engines, policy,
                                                        where, what):
    data = _data(tmp_path, allocator, engines, policy)
    path = tmp_path / "cortex.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {where}:"), message
    assert what in message, message


def test_scale_out_with_the_null_backend_builds_like_the_first_engine_group(tmp_path):
    cfg = parse_config(_data(tmp_path, {"max_engines": 4}))
    assert cfg.allocator.template["backend"] == "null" and scale_out_budget(cfg) == 4
    engines = cfg.make_engines()
    allocator = make_allocator(cfg, engines)
    provider = allocator.provider
    assert isinstance(provider, AsyncEngineProvider)
    assert provider.max_engines == 4 and provider.num_startable() == 2
    engine = provider.factory("null-auto-0", "null")
    assert isinstance(engine, NullEngine) and engine.config.text == "ok"
    with pytest.raises(ValueError, match="not the pool's model 'gemma'"):
        provider.factory("null-auto-1", "gemma")


def test_no_scale_out_at_the_configured_count(tmp_path):
    cfg = parse_config(_data(tmp_path, {"max_engines": 2}))
    assert cfg.allocator.template is None
    assert make_allocator(cfg, cfg.make_engines()).provider is None


@pytest.mark.parametrize("cpus, threads, want", [(5, 1, 4), (5, 2, 2), (2, 1, 1), (64, 1, 8)])
def test_llamacpp_scale_out_is_capped_at_the_core_budget(tmp_path, monkeypatch, cpus, threads,
                                                         want):
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    engines = [{"backend": "llamacpp", "count": 1, "n_threads": threads,
                "n_threads_batch": threads}]
    cfg = parse_config(_data(tmp_path, {"max_engines": 8}, engines))
    assert scale_out_budget(cfg) == want
    allocator = make_allocator(cfg, {"llamacpp-0": object()})  # nothing is started
    if want > 1:
        assert allocator.provider.max_engines == want
        assert allocator.provider.num_startable() == want - 1
    else:  # no core left beyond the configured engine: no provider
        assert allocator.provider is None


def test_openai_scale_out_connects_to_standby_urls(tmp_path):
    urls = ["http://127.0.0.1:8001", "http://127.0.0.1:8002"]
    cfg = parse_config(_data(tmp_path, {"standby_urls": urls}, OPENAI))
    assert cfg.allocator.max_engines == 3 and scale_out_budget(cfg) == 3
    provider = make_allocator(cfg, {"openai-0": object()}).provider
    assert provider.max_engines == 3
    first = provider.factory("openai-auto-0", "m")
    second = provider.factory("openai-auto-1", "m")
    assert isinstance(first, OpenAIRemoteEngine)
    assert [first.config.base_url, second.config.base_url] == urls
    assert first.config.model == "m"


LLAMACPP = [{"backend": "llamacpp", "count": 2, "n_threads": 1, "n_threads_batch": 1,
             "cache_mb": 16}]


@pytest.mark.parametrize("engines", [
    None, pytest.param(LLAMACPP, marks=pytest.mark.slow, id="llamacpp")])
async def test_runtime_scales_out_and_in_through_the_config_provider(tmp_path, monkeypatch,
                                                                     engines):
    # Real llama.cpp engines too: the core budget is lifted to 3 engines (this machine
    # has 2 cores, which leaves none to scale out to; 3 single-threaded engines only
    # share them), the new engine loads the model, takes over the fix pool after its
    # first engine moves away, and serves the runs' fix calls.
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    await _scale_out_serve_and_scale_in(parse_config(_data(
        tmp_path, {"policy": "static", "interval_s": 0.01, "max_engines": 3}, engines)))


@pytest.mark.slow
async def test_runtime_scales_out_onto_a_real_standby_server(tmp_path):
    # Three real llama.cpp servers: two behind the configured openai engines, the third
    # a standby URL; scaling out connects a new engine to it, which serves fix calls.
    with llama_servers(3) as urls:
        engines = [{"backend": "openai", "urls": urls[:2], "max_concurrency": 1}]
        cfg = parse_config(_data(tmp_path, {"policy": "static", "interval_s": 0.01,
                                            "standby_urls": urls[2:]}, engines))
        assert cfg.allocator.max_engines == 3
        standby = await _scale_out_serve_and_scale_in(cfg)
        assert isinstance(standby, OpenAIRemoteEngine)
        assert standby.config.base_url == urls[2] and standby.stats().num_calls >= 3


@pytest.mark.slow
async def test_policy_scales_out_onto_a_standby_server_under_load_and_in_when_idle(tmp_path):
    # No decision by hand: runs whose SLO cannot be met threaten the generator pool, the
    # slo-pressure policy starts an engine on the standby server, which serves some of the
    # queued calls; once every pool is idle the policy retires it.
    with llama_servers(3) as urls:
        engines = [{"backend": "openai", "urls": urls[:2], "max_concurrency": 1}]
        await _policy_scales_out_under_load_and_in_when_idle(tmp_path, engines,
                                                             {"standby_urls": urls[2:]})


@pytest.mark.slow
async def test_policy_scales_out_an_embedded_engine_under_load_and_in_when_idle(
        tmp_path, monkeypatch):
    # The same with embedded llama.cpp engines: the core budget is lifted to 3 engines
    # (this machine's 2 cores leave none to scale out to), the policy starts a third
    # engine, which loads SmolLM2 and serves queued calls, then retires it.
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    await _policy_scales_out_under_load_and_in_when_idle(tmp_path, LLAMACPP,
                                                         {"max_engines": 3})


async def _policy_scales_out_under_load_and_in_when_idle(tmp_path, engines, section):
    """Ten runs with an SLO they cannot meet: the slo-pressure policy (no decision by
    hand) scales an engine out, the new engine serves some of their calls, and once
    every pool is idle the policy scales it in."""
    options = {"warmup_s": 0, "scale_in_idle_s": 1.0, "scale_cooldown_s": 0.5}
    cfg = parse_config(_data(tmp_path, {"interval_s": 0.05, "options": options, **section},
                             engines))
    new = f"{cfg.allocator.template['backend']}-auto-0"
    runtime = await build_runtime(cfg)
    try:
        allocator = runtime.controller.allocator
        assert allocator.config.policy == "slo-pressure" and allocator.provider is not None
        runs = [runtime.submit("w", {"q": f"question {i}"}, slo_s=0.05, timeout_s=120)
                for i in range(10)]
        done = [await runtime.wait(r.run_id) for r in runs]
        assert [r.status.value for r in done] == ["succeeded"] * 10, [r.reason for r in done]
        served = [t.engine_id for r in done for t in r.trace]
        assert new in served, served
        for _ in range(1000):
            await asyncio.sleep(0.01)
            if new not in runtime.engines:
                break
        kinds = [(r.decision.kind, r.decision.engine_id) for r in allocator.records]
        assert (DecisionKind.SCALE_OUT, new) in kinds, kinds
        assert (DecisionKind.SCALE_IN, new) in kinds, kinds
        assert new not in runtime.controller.engine_pool
    finally:
        await runtime.close()


async def _scale_out_serve_and_scale_in(cfg):
    """Scale a third engine out into the fix pool, move the pool's first engine away so
    the new one serves every fix call, then scale it in once it is not the last.
    Returns the engine that was started (stopped by then)."""
    backend = cfg.allocator.template["backend"]
    new = f"{backend}-auto-0"
    runtime = await build_runtime(cfg)
    try:
        controller = runtime.controller
        allocator = controller.allocator
        assert allocator.config.policy == "static" and allocator.provider is not None
        target = "fix"
        assert allocator.begin(Decision(DecisionKind.SCALE_OUT, "", "", target, "test"),
                               runtime.clock())
        for _ in range(1000):
            await asyncio.sleep(0.01)
            if new in controller.pools[target].engine_ids:
                break
        assert controller.engine_pool[new] == target
        started = runtime.engines[new]
        assert type(started) is type(runtime.engines[f"{backend}-0"])
        assert allocator.provider.num_startable() == 0
        first = next(e for e in controller.pools[target].engine_ids if e != new)
        assert allocator.begin(Decision(DecisionKind.MOVE, first, target, "gen", "test"),
                               runtime.clock())
        runs = [await runtime.run("w", {"q": str(i)}) for i in range(3)]
        assert all(r.status.value == "succeeded" for r in runs)
        assert controller.pools[target].engine_ids == [new]
        assert {t.engine_id for r in runs for t in r.trace if t.stage == target} == {new}
        assert allocator.begin(Decision(DecisionKind.SCALE_IN, new, target, "", "idle"),
                               runtime.clock()) is False  # the pool's last engine
        assert allocator.begin(Decision(DecisionKind.MOVE, first, "gen", target, "back"),
                               runtime.clock())
        await runtime.run("w", {"q": "again"})
        assert allocator.begin(Decision(DecisionKind.SCALE_IN, new, target, "", "idle"),
                               runtime.clock())
        for _ in range(200):
            await asyncio.sleep(0.01)
            if new not in runtime.engines:
                break
        assert new not in controller.engine_pool
        assert allocator.provider.num_startable() == 1
        return started
    finally:
        await runtime.close()


async def test_malleable_without_a_section_keeps_the_default_allocator(tmp_path):
    runtime = await build_runtime(parse_config(_data(tmp_path)))
    try:
        allocator = runtime.controller.allocator
        assert allocator is not None and allocator.provider is None
        assert allocator.config.policy == "slo-pressure"
    finally:
        await runtime.close()

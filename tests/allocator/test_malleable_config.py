"""`policy: cortex-malleable` in a deployment config gets an allocator; real-time
runs go through it."""
from __future__ import annotations

import yaml

import cortex.allocator  # noqa: F401  (registers cortex-malleable, as the CLI does)
from cortex.config import parse_config
from cortex.runtime.build import build_runtime
from tests.factories import loop_workflow


async def test_config_policy_builds_a_runtime_with_an_allocator(tmp_path):
    spec = {"name": "w", "inputs": ["q"], "stages": [
        {"name": "gen", "llm": {"user": "{{ q }}", "max_tokens": 8}, "next": "fix"},
        {"name": "fix", "llm": {"user": "fix {{ q }}", "max_tokens": 8}}],
        "knobs": [{"stage": "fix", "max_tokens": 4, "cost": 0.1}]}
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(spec))
    cfg = parse_config({"policy": "cortex-malleable", "workflows": [str(path)],
                        "engines": [{"backend": "null", "count": 3, "delay_ms": 5}]})
    runtime = await build_runtime(cfg)
    try:
        controller = runtime.controller
        assert controller.allocator is not None
        assert set(controller.allocator.models) == {"gen", "fix"}
        assert controller.orchestrator.knobs["w"].knobs[0].value == 4
        runs = [await runtime.run("w", {"q": str(i)}) for i in range(3)]
        assert all(r.status.value == "succeeded" for r in runs)
        assert controller.snapshots(runtime.clock()).pools
    finally:
        await runtime.close()


def test_static_policies_have_no_allocator():
    from cortex.controller import Controller
    from cortex.pool.placement import build_layout
    from tests.factories import FakeView, orchestrator

    wf = loop_workflow()
    layout = build_layout("cortex", wf, 2)
    views = {"gen": [FakeView("e0")], "fix": [FakeView("e1")]}
    c = Controller(orchestrator(wf), layout, views, lambda call: None)
    assert c.allocator is None and c.next_allocation_at() is None

"""The NL2SQL agent workflow shipped with Cortex."""
from __future__ import annotations

from pathlib import Path

import yaml

from cortex.workflow import CompiledWorkflow, compile_workflow

AGENT_YAML = Path(__file__).with_name("agent.yaml")


def load_agent(retry_budget: int | None = None) -> CompiledWorkflow:
    """Compile ``agent.yaml``; ``retry_budget`` overrides the verify->fix budget (default 3)."""
    spec = yaml.safe_load(AGENT_YAML.read_text())
    if retry_budget is not None:
        if retry_budget < 0:
            raise ValueError(f"retry budget must be >= 0, got {retry_budget}")
        verify = next(s for s in spec["stages"] if s["name"] == "verify")
        for edge in verify["next"]:
            if edge.get("goto") == "fix":
                edge["max_traversals"] = retry_budget
    return compile_workflow(spec, source=str(AGENT_YAML))

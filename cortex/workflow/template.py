"""Render ``{{ var }}`` templates against a run's context.

A value that is exactly one placeholder keeps its type (a tool can receive a
dict); placeholders inside text are replaced by their string form.
"""
from __future__ import annotations

import json
from typing import Any

from cortex.workflow.graph import TEMPLATE_VAR


def lookup(context: dict[str, Any], dotted: str) -> Any:
    value: Any = context
    for part in dotted.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise KeyError(f"template input {{{{ {dotted} }}}} has no value yet "
                           f"(missing {part!r})")
    return value


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return "" if value is None else str(value)


def render(value: Any, context: dict[str, Any]) -> Any:
    if isinstance(value, str):
        whole = TEMPLATE_VAR.fullmatch(value.strip())
        if whole:
            return lookup(context, whole.group(1))
        return TEMPLATE_VAR.sub(lambda m: _as_text(lookup(context, m.group(1))), value)
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context) for v in value]
    return value


def render_text(template: str, context: dict[str, Any]) -> str:
    return TEMPLATE_VAR.sub(lambda m: _as_text(lookup(context, m.group(1))), template)

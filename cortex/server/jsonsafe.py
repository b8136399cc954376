"""JSON on the wire never carries NaN or Infinity: they are not JSON.

Requests cannot bring them in (``cortex.server.schemas`` refuses non-finite
numbers), but a run's output, a view or a figure could still hold one (a SQL
result of ``1e999``, a ratio over nothing). Such a value is sent as ``null``
rather than crashing the response or emitting invalid JSON. The common case
(no such value) costs one ``json.dumps`` as before.
"""
from __future__ import annotations

import json
import math
from typing import Any

from fastapi.responses import JSONResponse


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, +-Infinity) replaced by None, recursively
    through dicts, lists and tuples."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def dumps(data: Any, compact: bool = True) -> str:
    """``json.dumps`` (objects it cannot encode become ``str``), non-finite floats as null."""
    separators = (",", ":") if compact else None
    try:
        return json.dumps(data, default=str, separators=separators, allow_nan=False)
    except ValueError:  # a NaN or an infinity somewhere
        return json.dumps(finite(data), default=str, separators=separators, allow_nan=False)


class SafeJSONResponse(JSONResponse):
    """A ``JSONResponse`` that sends non-finite floats as null instead of failing with
    ``Out of range float values are not JSON compliant``."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except ValueError:
            return super().render(finite(content))

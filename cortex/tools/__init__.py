"""Tool stages: registered callables run on CPU executor pools.

A tool takes its rendered ``args`` dict and returns a ``ToolResult``
(outcome label + JSON-able output). Tools are synchronous and may block; the
real-time runtime runs them in a thread pool.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cortex.core import ToolResult
from cortex.registry import Registry

ToolFn = Callable[[dict[str, Any]], ToolResult]
TOOLS: Registry[ToolFn] = Registry("tool")


def load_builtin_tools() -> None:
    """Import modules that register built-in tools (idempotent)."""
    import cortex.nl2sql.tools  # noqa: F401

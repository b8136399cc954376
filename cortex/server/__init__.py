"""The Cortex HTTP server (``cortex serve``).

Who owns what:

- ``service.CortexService``: the deployment's lifecycle (background start,
  readiness, drain on shutdown), admission (503 while starting or draining,
  429 when a pool's queue is full) and which finished runs stay readable.
- ``deployment``: assembles the runtime with one single-stage workflow per LLM
  pool, so an OpenAI request naming a pool is served by that pool.
- ``observer`` / ``events`` / ``stats`` / ``metrics``: turn runtime events into
  SSE logs, rolling dashboard figures and Prometheus metrics (read-only).
- ``routes_*``: translate HTTP to service calls and back; no decisions.
- ``serve``: uvicorn with SIGTERM -> drain -> exit.

Runs stay owned by the orchestrator; pools by the controller.
"""
from __future__ import annotations

from cortex.server.app import create_app
from cortex.server.service import CortexService, ServiceState, Submission

__all__ = ["CortexService", "ServiceState", "Submission", "create_app"]

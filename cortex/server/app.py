"""The ASGI application: routers, error handlers and middleware over one service."""
from __future__ import annotations

from fastapi import FastAPI

from cortex.server import routes_openai, routes_ops, routes_runs
from cortex.server.errors import install_handlers
from cortex.server.middleware import ApiKeyMiddleware, BodyLimitMiddleware
from cortex.server.service import CortexService


def create_app(service: CortexService) -> FastAPI:
    """Build the app. The caller owns the service's lifecycle (start, drain, close).

    The API key (``service.cfg.server.api_key``), when set, is required on every
    path except ``/healthz``, ``/readyz`` and the dashboard's static files.
    """
    app = FastAPI(title="Cortex", version="0.1.0",
                  description="Workflow-aware serving for agentic LLM workloads.",
                  docs_url="/docs", redoc_url=None)
    app.state.service = service
    install_handlers(app)
    for module in (routes_runs, routes_openai, routes_ops):
        app.include_router(module.router)
    server = service.cfg.server
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=server.max_body_bytes)
    if server.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=server.api_key)
    return app

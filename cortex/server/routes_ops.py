"""Operations endpoints: dashboard, health, readiness and Prometheus metrics.

    GET /               the live dashboard (static HTML/JS, no external assets)
    GET /v1/dashboard   the JSON the dashboard polls
    GET /healthz        liveness: 200 while the process serves (state in the body)
    GET /readyz         readiness: 200 only when engines are up and runs are admitted
    GET /metrics        Prometheus text format
"""
from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from cortex.server.errors import NotFound
from cortex.server.jsonsafe import SafeJSONResponse
from cortex.server.routes_runs import ServiceDep
from cortex.server.views import dashboard_view

router = APIRouter(tags=["operations"])
_STATIC = {"dashboard.js": "text/javascript; charset=utf-8",
           "dashboard.css": "text/css; charset=utf-8"}


def _static(name: str) -> str:
    return resources.files("cortex.server").joinpath("static", name).read_text()


@router.get("/", response_class=HTMLResponse)
async def dashboard_page() -> HTMLResponse:
    return HTMLResponse(_static("dashboard.html"), headers={"Cache-Control": "no-cache"})


@router.get("/static/{name}")
async def static_file(name: str) -> Response:
    if name not in _STATIC:
        raise NotFound(f"no static file {name!r}")
    return Response(_static(name), media_type=_STATIC[name],
                    headers={"Cache-Control": "no-cache"})


@router.get("/v1/dashboard")
async def dashboard_data(service: ServiceDep) -> dict[str, Any]:
    return dashboard_view(service)


@router.get("/healthz")
async def healthz(service: ServiceDep) -> dict[str, Any]:
    return {"status": "ok", "state": service.state.value,
            "uptime_s": round(service.uptime_s(), 3)}


@router.get("/readyz")
async def readyz(service: ServiceDep) -> SafeJSONResponse:
    ready, reason = service.is_ready() if service.deployment is not None else (
        False, f"server is {service.state.value}")
    return SafeJSONResponse({"ready": ready, "state": service.state.value, "reason": reason},
                        status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(service: ServiceDep) -> Response:
    from cortex.server.metrics import CONTENT_TYPE

    return Response(service.metrics.render(), media_type=CONTENT_TYPE)

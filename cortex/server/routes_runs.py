"""The workflow API: runs, their live events, workflows and pools.

    POST   /v1/runs                 admit a run (202 + id, or 200 + result with wait)
    GET    /v1/runs                 recent runs (?status=&limit=)
    GET    /v1/runs/{id}            one run
    GET    /v1/runs/{id}/events     server-sent events until the run ends
    DELETE /v1/runs/{id}            cancel (stops in-flight engine calls)
    GET    /v1/workflows            workflows, their inputs and stage -> pool map
    GET    /v1/pools                pools, engines, queues, utilisation, hit rate, SLO,
                                    and the allocator's moves (?decisions=N)
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from cortex.core import RunStatus
from cortex.server.errors import Overloaded
from cortex.server.jsonsafe import SafeJSONResponse
from cortex.server.observer import run_view
from cortex.server.schemas import RunRequest
from cortex.server.service import CortexService, Submission
from cortex.server.sse import KEEP_ALIVE, sse_frame, sse_response
from cortex.server.views import NUM_DECISIONS, allocation_view, pool_views, workflow_views

router = APIRouter(prefix="/v1", tags=["workflows"])


async def get_service(request: Request) -> CortexService:
    """The app's service (async: FastAPI would run a sync dependency in a thread)."""
    return request.app.state.service


ServiceDep = Annotated[CortexService, Depends(get_service)]


def seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000.0


def run_links(run_id: str) -> dict[str, str]:
    return {"self": f"/v1/runs/{run_id}", "events": f"/v1/runs/{run_id}/events"}


@router.post("/runs", status_code=202)
async def create_run(body: RunRequest, service: ServiceDep
                     ) -> SafeJSONResponse:
    run = service.submit(Submission(body.workflow, body.inputs, slo_s=seconds(body.slo_ms),
                                    timeout_s=seconds(body.timeout_ms)))
    if body.wait:
        run = await service.wait(run.run_id)
        if run.status is RunStatus.REJECTED:
            raise Overloaded(f"{run.reason} (run {run.run_id} rejected)", retry_after_s=1)
        return SafeJSONResponse(run_view(run))
    body_out = {"run_id": run.run_id, "workflow": run.workflow.name,
                "status": run.status.value, "links": run_links(run.run_id)}
    return SafeJSONResponse(body_out, status_code=202,
                        headers={"Location": run_links(run.run_id)["self"]})


@router.get("/runs")
async def list_runs(service: ServiceDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50,
                    status: Annotated[RunStatus | None, Query()] = None) -> dict[str, Any]:
    runs = service.list_runs(limit, status.value if status else None)
    return {"runs": [{"run_id": r.run_id, "workflow": r.workflow.name, "status": r.status.value,
                      "reason": r.reason, "latency_s": r.latency_s, "met_slo": r.met_slo}
                     for r in runs]}


@router.get("/runs/{run_id}")
async def get_run(run_id: str, service: ServiceDep
                  ) -> dict[str, Any]:
    return run_view(service.get_run(run_id))


@router.delete("/runs/{run_id}")
async def cancel_run(run_id: str, service: ServiceDep
                     ) -> dict[str, Any]:
    return run_view(service.cancel(run_id))


@router.get("/runs/{run_id}/events")
async def run_events(run_id: str, service: ServiceDep,
                     last_event_id: Annotated[str | None, Header()] = None
                     ) -> StreamingResponse:
    service.get_run(run_id)  # 404 before the stream starts
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    return sse_response(_event_frames(service, run_id, after))


async def _event_frames(service: CortexService, run_id: str, after: int
                        ) -> AsyncIterator[bytes]:
    async for event in service.events.follow(run_id, after):
        if event is None:
            yield KEEP_ALIVE
        else:
            yield sse_frame(event, event=event["type"], event_id=event["seq"])


@router.get("/workflows")
async def list_workflows(service: ServiceDep) -> dict[str, Any]:
    return {"workflows": workflow_views(service)}


@router.get("/pools")
async def list_pools(service: ServiceDep,
                     decisions: Annotated[int, Query(ge=0, le=1000)] = NUM_DECISIONS
                     ) -> dict[str, Any]:
    """Pools with their engines (home pool, lent / borrowed / draining) and, with
    ``policy: cortex-malleable``, the allocator's state and its last ``decisions``
    decisions (``allocation``; null for static policies)."""
    return {"pools": pool_views(service),
            "allocation": allocation_view(service, num_decisions=decisions)}

"""Read-only JSON views of a running service: pools, workflows, the dashboard
and the Prometheus gauges. Nothing here changes state."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from cortex.allocator import Allocator, DecisionKind, MoveRecord
from cortex.allocator.types import Decision
from cortex.pool.pool import StagePool

if TYPE_CHECKING:
    from cortex.server.service import CortexService

SHORT_WINDOW_S = 60.0
LONG_WINDOW_S = 300.0
NUM_DECISIONS = 50   # decisions shown by default in ``allocation.recent``
NUM_REFUSED = 10     # refused decisions shown in ``allocation.recent_refused``


def _window(service: CortexService, window_s: float) -> float:
    return max(1e-3, min(window_s, service.uptime_s()))


def _engine_capacity(service: CortexService, engine_id: str) -> int:
    engine = service.runtime.engines.get(engine_id)
    return engine.max_concurrency if engine is not None else 1


def _llm_stages(service: CortexService) -> set[str]:
    workflows = service.runtime.controller.orchestrator.workflows.values()
    return {s for wf in workflows for s in wf.llm_stages}


def pool_view(service: CortexService, pool: StagePool, is_llm: bool) -> dict[str, Any]:
    now = time.monotonic()
    window = _window(service, SHORT_WINDOW_S)
    snap = pool.snapshot()
    allocator = service.runtime.controller.allocator
    engines = [{"id": e, "healthy": e in snap.healthy, "in_flight": pool.in_flight(e),
                "utilisation": service.stats.engine_utilisation(
                    e, now, window, _engine_capacity(service, e)),
                **_engine_placement(allocator, pool.name, e)}
               for e in snap.engine_ids]
    stats = pool.stats
    slo = service.stats.slo_by_pool.get(pool.name)
    recent = service.stats.pool_window(pool.name, now, window, snap.capacity)
    return {
        "name": pool.name,
        "kind": "llm" if is_llm else "tool",
        "stages": list(snap.stages),
        "engines": engines,
        "queue_depth": snap.queue_depth,
        "max_queue": pool.max_queue,
        "in_flight": snap.in_flight,
        "capacity": snap.capacity,
        "utilisation": recent["utilisation"],
        "prefix_hit_rate": round(stats.prefix_hit_rate, 4) if is_llm else None,
        "num_calls": stats.num_calls,
        "num_rejected": stats.num_rejected,
        "mean_queue_wait_s": round(stats.queue_wait_s / stats.num_calls, 6)
        if stats.num_calls else None,
        "slo_attainment": None if slo is None else round(slo.ratio or 0.0, 4),
        "recent": recent,
        "lent_out": _lent_out(allocator, pool.name),
    }


def _engine_placement(allocator: Allocator | None, pool: str, engine_id: str
                      ) -> dict[str, Any]:
    """Where an engine belongs and what the allocator is doing with it: ``home``
    (the pool that owns it), ``borrowed`` (serving here on loan from ``home``),
    ``draining`` (a decision is waiting for its calls to finish) and ``pending``
    (that decision: kind and target)."""
    a = allocator.assignment.get(engine_id) if allocator is not None else None
    if a is None:
        return {"home": pool, "borrowed": False, "draining": False, "pending": None}
    pending = None if a.pending is None else {"kind": a.pending.kind.value,
                                              "target": a.pending.target or None}
    return {"home": a.home, "borrowed": a.home != pool, "draining": a.pending is not None,
            "pending": pending}


def _lent_out(allocator: Allocator | None, pool: str) -> list[dict[str, str]]:
    """Engines whose home is ``pool``, serving another pool on loan."""
    if allocator is None:
        return []
    return [{"id": a.engine_id, "serving": a.pool}
            for a in sorted(allocator.assignment.values(), key=lambda a: a.engine_id)
            if a.home == pool and a.pool != pool]


def pool_views(service: CortexService) -> list[dict[str, Any]]:
    llm = _llm_stages(service)
    return [pool_view(service, pool, bool(set(pool.stages) & llm))
            for pool in service.runtime.controller.pools.values()]


def allocation_view(service: CortexService, num_decisions: int = NUM_DECISIONS
                    ) -> dict[str, Any] | None:
    """The allocator's state (None when the policy is static): its policy, the
    decisions it made by kind, the last ``num_decisions`` of them (newest first),
    the moves in flight, refused decisions, cold-start accounting per pool and
    the scale-out budget. Times: ``t`` in seconds since the server started,
    ``time`` as a Unix timestamp."""
    allocator = service.runtime.controller.allocator
    if allocator is None:
        return None
    clock_now = service.runtime.clock()
    uptime = service.uptime_s()
    wall = time.time()

    def stamp(at: float | None) -> dict[str, float | None]:
        if at is None:
            return {"t": None, "time": None}
        return {"t": round(uptime - (clock_now - at), 3), "time": round(wall - (clock_now - at), 3)}

    def record(r: MoveRecord) -> dict[str, Any]:
        done = stamp(r.done_at)
        return {**stamp(r.begun_at), **_decision(r.decision), "done": r.done_at is not None,
                "done_t": done["t"], "cancelled": r.cancelled or None}

    records = allocator.records
    recent = records[-num_decisions:] if num_decisions > 0 else []
    in_flight = [r for r in records if r.done_at is None]
    provider = allocator.provider
    return {
        "policy": allocator.config.policy,
        "interval_s": allocator.config.interval_s,
        "models": dict(allocator.models),
        "decisions": allocator.decision_counts(),
        "num_decisions": len(records),
        "recent": [record(r) for r in reversed(recent)],
        "in_flight": [record(r) for r in in_flight],
        "refused": len(allocator.refused),
        "recent_refused": [{**stamp(at), **_decision(d), "why": why}
                           for at, d, why in reversed(allocator.refused[-NUM_REFUSED:])],
        "cold_window_s": allocator.config.cold_window_s,
        "cold": allocator.cold_summary(),
        "scaling": None if provider is None else {
            "max_engines": getattr(provider, "max_engines", None),
            "startable": provider.num_startable(),
            "starting": [r.decision.engine_id for r in in_flight
                         if r.decision.kind is DecisionKind.SCALE_OUT]},
    }


def _decision(d: Decision) -> dict[str, Any]:
    return {"kind": d.kind.value, "engine": d.engine_id or None, "source": d.source or None,
            "target": d.target or None, "reason": d.reason}


def workflow_views(service: CortexService) -> list[dict[str, Any]]:
    deployment = service.deployment
    if deployment is None:
        return []
    layout = deployment.runtime.controller.layout
    out = []
    for wf in deployment.workflows.values():
        stages = [{"name": s.name, "kind": s.kind.value, "pool": layout.pool_of(s.name),
                   **({"tool": s.tool} if s.tool else {})} for s in wf.stages.values()]
        slo_s = wf.default_slo_s or service.cfg.slo_s
        out.append({"name": wf.name, "description": wf.description, "inputs": list(wf.inputs),
                    "output": wf.output, "default_slo_ms": round(slo_s * 1000.0, 3),
                    "stages": stages})
    return out


def model_views(service: CortexService) -> list[dict[str, Any]]:
    """OpenAI ``/v1/models`` entries: every workflow, then every LLM pool."""
    deployment = service.deployment
    if deployment is None:
        return []
    created = int(time.time() - service.uptime_s())
    rows = [(name, "cortex-workflow") for name in deployment.workflows]
    rows += [(name, "cortex-pool") for name in deployment.pool_workflows]
    return [{"id": name, "object": "model", "created": created, "owned_by": owner}
            for name, owner in rows]


def dashboard_view(service: CortexService) -> dict[str, Any]:
    out: dict[str, Any] = {"state": service.state.value, "policy": service.cfg.policy,
                           "uptime_s": round(service.uptime_s(), 3), "generated_at": time.time()}
    if service.deployment is None:
        return {**out, "ready": False, "reason": service.state.value, "pools": [], "runs": {}, "workflows": {},
                "history": []}
    ready, why = service.is_ready()
    now = time.monotonic()
    runs = {key: service.stats.run_window(now, _window(service, w))
            for key, w in (("1m", SHORT_WINDOW_S), ("5m", LONG_WINDOW_S))}
    workflows = {name: service.stats.run_window(now, _window(service, LONG_WINDOW_S), name)
                 for name in service.deployment.workflows}
    return {**out, "ready": ready, "reason": why, "active_runs": service.num_active,
            "pools": pool_views(service), "runs": runs, "workflows": workflows,
            "history": list(service.stats.history),
            "allocation": allocation_view(service, num_decisions=10)}


def history_point(service: CortexService) -> dict[str, Any]:
    pools = service.runtime.controller.pools.values()
    return {"t": round(service.uptime_s(), 3), "active": service.num_active,
            "queue": {p.name: p.queue_depth for p in pools},
            "in_flight": {p.name: p.snapshot().in_flight for p in pools}}


Rows = list[tuple[dict[str, str], float]]


def gauge_rows(service: CortexService) -> dict[str, Rows]:
    """Samples for the scrape-time gauges (see ``cortex.server.metrics``)."""
    ready = service.deployment is not None and service.is_ready()[0]
    rows: dict[str, Rows] = {"cortex_server_ready": [({}, float(ready))]}
    if service.deployment is None:
        return rows
    rows["cortex_runs_active"] = [({}, float(service.num_active))]
    for view in pool_views(service):
        label = {"pool": view["name"]}
        for key in ("queue_depth", "in_flight", "capacity", "max_queue"):
            rows.setdefault(f"cortex_pool_{key}", []).append((label, float(view[key])))
        for engine in view["engines"]:
            e_label = {"pool": view["name"], "engine": engine["id"]}
            rows.setdefault("cortex_engine_healthy", []).append(
                (e_label, float(engine["healthy"])))
            rows.setdefault("cortex_engine_in_flight", []).append(
                (e_label, float(engine["in_flight"])))
            rows.setdefault("cortex_engine_utilisation", []).append(
                (e_label, float(engine["utilisation"])))
    rows["cortex_slo_attainment_ratio"] = [
        ({"workflow": name}, float(att.ratio or 0.0))
        for name, att in service.stats.slo_by_workflow.items()]
    return rows

"""`cortex run WORKFLOW QUESTION --db DB`: one run of a workflow, printed with its trace."""
from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from cortex.cli_args import integer, number
from cortex.pool.placement import PLACEMENTS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a workflow once and print its answer and stage trace")
    p.add_argument("workflow", help="workflow name (nl2sql) or path to a workflow YAML")
    p.add_argument("question", help="the question (the workflow's `question` input)")
    p.add_argument("--db", default="sales", help="nl2sql: database name or .sqlite path")
    p.add_argument("--config", type=Path, help="Cortex config YAML (engines, policy)")
    p.add_argument("--policy", default="cortex", choices=PLACEMENTS.names())
    p.add_argument("--engines", type=integer(1), default=2, help="llama.cpp engines (no --config)")
    p.add_argument("--cache-mb", type=number(0), default=64.0,
                   help="prefix cache per engine, MB (0: only the live context is reused)")
    p.add_argument("--slo", type=number(0, above=True), default=60.0, help="SLO in seconds")
    p.add_argument("--server", help="send the run to a running `cortex serve` at this URL")
    p.add_argument("--api-key", help="API key for --server (default: $CORTEX_API_KEY)")
    p.add_argument("--json", action="store_true", help="print the run as JSON")
    p.set_defaults(func=_cmd_run)


def _config(args: argparse.Namespace) -> Any:
    from cortex.config import load_config, parse_config

    if args.config:
        return load_config(args.config)
    workflows = ["nl2sql"] if args.workflow == "nl2sql" else [args.workflow]
    return parse_config({
        "policy": args.policy, "workflows": workflows,
        "engines": [{"backend": "llamacpp", "count": args.engines, "cache_mb": args.cache_mb}],
    }, source="<cortex run flags>", base_dir=Path.cwd())


async def _run_local(args: argparse.Namespace) -> dict[str, Any]:
    from cortex.nl2sql.datasets import DB_IDS
    from cortex.runtime.build import build_runtime

    cfg = _config(args)
    db = Path(args.db).expanduser()
    if args.db not in DB_IDS and db.is_file():  # a local file named on this command line
        cfg.db_dirs = (*cfg.db_dirs, db.resolve().parent)
        args.db = str(db.resolve())
    runtime = await build_runtime(cfg)
    try:
        name = cfg.workflows[0].name
        run = await runtime.run(name, {"question": args.question, "db": args.db},
                                slo_s=args.slo)
        return run.to_dict()
    finally:
        await runtime.close()


def _cmd_run(args: argparse.Namespace) -> int:
    if args.server:
        from cortex.client import CortexClient, CortexError

        try:
            with CortexClient(args.server, api_key=args.api_key) as client:
                result = client.run(args.workflow, {"question": args.question, "db": args.db},
                                    slo_ms=args.slo * 1000, wait=True)
        except CortexError as exc:
            raise ValueError(f"--server {args.server}: {exc}") from None
    else:
        result = asyncio.run(_run_local(args))
    print(json.dumps(result, indent=2, default=str) if args.json else format_run(result),
          flush=True)
    return 0 if result["status"] == "succeeded" else 1


def format_run(run: dict[str, Any], max_rows: int = 20) -> str:
    out = run.get("output") or {}
    lines = [f"run {run['run_id']}: {run['status']}"
             + (f" ({run['reason']})" if run.get("reason") else "")
             + (f" in {run['latency_s']:.2f} s" if run.get("latency_s") is not None else "")]
    if out.get("sql"):
        lines += ["", "SQL:", f"  {out['sql']}"]
    rows = out.get("rows") or []
    if out.get("columns"):
        lines += ["", "Rows:", "  " + " | ".join(map(str, out["columns"]))]
        lines += ["  " + " | ".join(map(str, row)) for row in rows[:max_rows]]
        if len(rows) > max_rows:
            lines.append(f"  ... {len(rows) - max_rows} more")
    lines += ["", "Stage trace:", _trace_table(run.get("trace") or [])]
    return "\n".join(lines)


def _trace_table(trace: list[dict[str, Any]]) -> str:
    header = ("stage", "try", "engine", "outcome", "queue s", "service s", "cached/prompt")
    rows = [(t["stage"], str(t["attempt"]), t["engine"], t["outcome"],
             f"{t['queue_wait_s']:.3f}", f"{t['service_s']:.3f}",
             f"{t['cached_prompt_tokens'] if t['cached_prompt_tokens'] is not None else '?'}"
             f"/{t['prompt_tokens']}" if t["prompt_tokens"] else "-") for t in trace]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths).format
    return "\n".join("  " + fmt(*row) for row in [header, *rows])

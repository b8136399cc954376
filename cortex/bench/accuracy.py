"""Execution accuracy of the NL2SQL agent: run every question through Cortex,
execute the final SQL and the gold SQL in the sandbox, compare result sets."""
from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from cortex.core import RunStatus
from cortex.orchestrator.run import Run

SCORE_MAX_ROWS = 100_000


def load_eval_questions(questions: Path | None, db_dir: Path | None, fmt: str,
                        db: str | None) -> list[Any]:
    from cortex.nl2sql import benchmarks, datasets

    if questions is None:
        if db_dir is not None:
            raise ValueError("--db-dir needs --questions (a Spider/BIRD question file)")
        return datasets.load_questions(db)
    if db_dir is None:
        raise ValueError("--questions needs --db-dir (databases as <dir>/<db_id>/<db_id>.sqlite)")
    if fmt == "auto":
        import json

        first = (json.loads(Path(questions).read_text()) or [{}])[0]
        fmt = "bird" if "SQL" in first else "spider"
    loader = benchmarks.load_bird if fmt == "bird" else benchmarks.load_spider
    return loader(questions, db_dir)


def spread(questions: list[Any], limit: int) -> list[Any]:
    """The first ``limit`` questions taken round-robin over difficulty levels (file order
    within a level), so a short run covers every level."""
    groups: dict[str, list[Any]] = defaultdict(list)
    for q in questions:
        groups[getattr(q, "difficulty", "") or "unknown"].append(q)
    out: list[Any] = []
    queues = [iter(g) for g in groups.values()]
    while queues and len(out) < limit:
        for it in list(queues):
            q = next(it, None)
            if q is None:
                queues.remove(it)
            elif len(out) < limit:
                out.append(q)
    return out


def _db_path(question: Any) -> str:
    path = getattr(question, "db_path", None)
    if path:
        return str(path)
    from cortex.nl2sql.datasets import ensure_databases

    return str(ensure_databases()[question.db_id])


def _question_text(question: Any) -> str:
    evidence = getattr(question, "evidence", "")
    return f"{question.question} (Hint: {evidence})" if evidence else question.question


def score_run(run: Run, question: Any) -> dict[str, Any]:
    from cortex.nl2sql.sandbox import run_query
    from cortex.nl2sql.scoring import results_match

    verify = [t for t in run.trace if t.stage == "verify"]
    out = run.output or {}
    pred_sql = out.get("sql") or ""
    correct = False
    if run.status is RunStatus.SUCCEEDED and pred_sql:
        db = _db_path(question)
        gold = run_query(db, question.gold_sql, max_rows=SCORE_MAX_ROWS)
        pred = run_query(db, pred_sql, max_rows=SCORE_MAX_ROWS)
        correct = bool(gold.ok and pred.ok and results_match(pred.rows, gold.rows,
                                                             question.gold_sql))
    return {
        "question_id": question.question_id, "db_id": question.db_id,
        "difficulty": getattr(question, "difficulty", "") or "unknown",
        "question": question.question, "gold_sql": question.gold_sql, "pred_sql": pred_sql,
        "status": run.status.value, "reason": run.reason, "correct": correct,
        "first_try_ok": bool(verify) and verify[0].outcome == "ok",
        "num_fixes": sum(1 for t in run.trace if t.stage == "fix" and t.ran),
        "latency_s": run.latency_s,
    }


def summarize_scores(rows: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    by_diff: dict[str, list[bool]] = defaultdict(list)
    for row in rows:
        by_diff[row["difficulty"]].append(row["correct"])
    fixed = [r for r in rows if r["num_fixes"]]
    n = max(1, len(rows))
    return {
        "questions": len(rows),
        "execution_accuracy": round(sum(r["correct"] for r in rows) / n, 4),
        "by_difficulty": {d: {"n": len(v), "accuracy": round(sum(v) / len(v), 4)}
                          for d, v in sorted(by_diff.items())},
        "first_try_success": round(sum(r["first_try_ok"] for r in rows) / n, 4),
        "mean_retries": round(sum(r["num_fixes"] for r in rows) / n, 3),
        "fix_success_rate": (round(sum(r["status"] == "succeeded" for r in fixed) / len(fixed), 4)
                             if fixed else None),
        "runs_succeeded": sum(r["status"] == "succeeded" for r in rows),
        "wall_s": round(wall_s, 2),
    }


async def evaluate(questions: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    from cortex.config import load_config, parse_config
    from cortex.runtime.build import build_runtime

    if args.config:
        cfg = load_config(args.config)
    else:
        cfg = parse_config({"policy": args.policy, "workflows": ["nl2sql"], "slo_ms": 600_000,
                            "max_queue": max(256, len(questions) * 2),
                            "engines": [{"backend": "llamacpp", "count": args.engines,
                                         "cache_mb": args.cache_mb}]}, "<cortex eval flags>")
    if args.retry_budget != 3:
        from cortex.nl2sql.workflow import load_agent

        cfg.workflows = [load_agent(args.retry_budget)]
    # the questions' own database files (external benchmarks) are this user's to open
    folders = {Path(q.db_path).resolve().parent for q in questions if getattr(q, "db_path", "")}
    cfg.db_dirs = (*cfg.db_dirs, *sorted(folders))
    runtime = await build_runtime(cfg)
    started = time.perf_counter()
    try:
        ids = [runtime.submit("nl2sql", {"question": _question_text(q), "db": _db_path(q)},
                              timeout_s=3600).run_id for q in questions]
        runs = [await runtime.wait(i) for i in ids]
    finally:
        await runtime.close()
    rows = [score_run(run, q) for run, q in zip(runs, questions)]
    return {"summary": summarize_scores(rows, time.perf_counter() - started), "questions": rows}


def format_summary(summary: dict[str, Any]) -> str:
    fix_rate = summary["fix_success_rate"]
    lines = [(f"questions: {summary['questions']}   execution accuracy: "
              f"{summary['execution_accuracy']:.1%}   succeeded runs: "
              f"{summary['runs_succeeded']}"),
             (f"first-try success: {summary['first_try_success']:.1%}   mean retries (fix "
              f"calls): {summary['mean_retries']}   fix success rate: "
              + ("-" if fix_rate is None else f"{fix_rate:.1%}")),
             "by difficulty:"]
    lines += [f"  {d:<14} n={v['n']:<4} accuracy={v['accuracy']:.1%}"
              for d, v in summary["by_difficulty"].items()]
    lines.append(f"wall: {summary['wall_s']} s")
    return "\n".join(lines)

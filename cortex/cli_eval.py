"""`cortex eval nl2sql [--questions FILE --db-dir DIR] [--limit N]`: execution accuracy
of the NL2SQL agent served by Cortex (built-in set, Spider or BIRD files)."""
from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from cortex.cli_args import integer, number
from cortex.pool.placement import PLACEMENTS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="execution accuracy of a workflow on NL2SQL questions")
    p.add_argument("workload", choices=["nl2sql"])
    p.add_argument("--questions", type=Path, help="Spider/BIRD-format JSON question file")
    p.add_argument("--db-dir", type=Path, help="databases as <dir>/<db_id>/<db_id>.sqlite")
    p.add_argument("--format", choices=["auto", "spider", "bird"], default="auto")
    p.add_argument("--limit", type=integer(1),
                   help="N questions, taken in turn from each difficulty level (file order)")
    p.add_argument("--db", help="built-in set: only this database")
    p.add_argument("--policy", default="cortex", choices=PLACEMENTS.names())
    p.add_argument("--engines", type=integer(1), default=2)
    p.add_argument("--cache-mb", type=number(0), default=64.0)
    p.add_argument("--retry-budget", type=integer(0), default=3)
    p.add_argument("--config", type=Path, help="Cortex config YAML (engines, policy)")
    p.add_argument("--out", type=Path, help="write per-question results and summary JSON")
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    from cortex.bench.accuracy import evaluate, format_summary, load_eval_questions, spread

    questions = load_eval_questions(args.questions, args.db_dir, args.format, args.db)
    if args.limit is not None:
        questions = spread(questions, args.limit)
    report = asyncio.run(evaluate(questions, args))
    print(format_summary(report["summary"]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {args.out}")
    return 0

"""`cortex report results.json [--out-dir DIR]`."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="markdown table + PNG plots from `cortex bench --out`")
    p.add_argument("results", type=Path)
    p.add_argument("--out-dir", type=Path, help="where to write the .md and .png files")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from cortex.bench.report import render_report

    markdown, images = render_report(args.results, args.out_dir)
    print(markdown)
    for image in images:
        print(f"wrote {image}")
    return 0

"""`cortex profile --engine llamacpp --out profile.json`: calibrate the simulator
from measurements of a real engine on this machine."""
from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="measure a real engine; write a simulator profile")
    p.add_argument("--engine", default="llamacpp", choices=["llamacpp"])
    p.add_argument("rest", nargs=argparse.REMAINDER,
                   help="options passed to the profiler (e.g. --out profile.json)")
    p.set_defaults(func=_cmd_profile)


def _cmd_profile(args: argparse.Namespace) -> int:
    from cortex.engine.profile import main

    return int(main(args.rest) or 0)

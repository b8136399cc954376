"""`cortex profile --engine llamacpp --out profile.json`: calibrate the simulator
from measurements of a real engine on this machine."""
from __future__ import annotations

import argparse
from pathlib import Path

from cortex.cli_args import integer, number


def add_profile_arguments(p: argparse.ArgumentParser) -> None:
    """The profiler's flags (also ``python -m cortex.engine.profile``'s)."""
    p.add_argument("--model", default="smollm2-135m", help="model name or .gguf path")
    p.add_argument("--cache-mb", type=number(0, above=True), default=64.0,
                   help="prefix-cache budget per engine")
    p.add_argument("--repeats", type=integer(1), default=3, help="repetitions per measurement")
    p.add_argument("--prefix-tokens", type=integer(128), default=400,
                   help="shared prompt prefix length")
    p.add_argument("--output-tokens", type=integer(2), default=32,
                   help="output tokens per call")
    p.add_argument("--block-size", type=integer(1), default=16, help="simulator block size")
    p.add_argument("--out", type=Path, help="write the profile as JSON here")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="measure a real engine; write a simulator profile")
    p.add_argument("--engine", default="llamacpp", choices=["llamacpp"])
    add_profile_arguments(p)
    p.set_defaults(func=_cmd_profile)


def _cmd_profile(args: argparse.Namespace) -> int:
    from cortex.engine.profile import run

    return run(args)

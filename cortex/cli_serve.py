"""`cortex serve --config cortex.yaml [--host H --port P]`: serve workflows over HTTP.

The workflow API, the OpenAI-compatible API, Prometheus metrics and the live
dashboard; see docs/server.md. SIGTERM drains gracefully.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from cortex.cli_args import integer, number


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve workflows over HTTP (workflow API, OpenAI API, "
                                     "metrics, dashboard)")
    p.add_argument("--config", type=Path, required=True, help="Cortex config YAML")
    p.add_argument("--host", help="listen address (default: server.host, 127.0.0.1)")
    p.add_argument("--port", type=integer(0, 65535, why=" (0: any free port)"),
                   help="listen port (default: server.port, 8080; 0: any free port)")
    p.add_argument("--api-key-env", metavar="VAR",
                   help="environment variable holding the API key (required beyond loopback)")
    p.add_argument("--grace", type=number(0), help="seconds in-flight runs get on SIGTERM "
                                               "(default: server.grace_s, 10)")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=_cmd_serve)


def _apply_flags(cfg: object, args: argparse.Namespace) -> None:
    server = cfg.server  # type: ignore[attr-defined]
    if args.host is not None:
        server.host = args.host
    if args.port is not None:
        server.port = args.port
    if args.grace is not None:
        server.grace_s = args.grace
    if args.api_key_env:
        key = os.environ.get(args.api_key_env)
        if not key:
            raise ValueError(f"--api-key-env: environment variable {args.api_key_env} "
                             "is not set or empty")
        server.api_key = key


def _cmd_serve(args: argparse.Namespace) -> int:
    from cortex.config import load_config
    from cortex.server.serve import CortexServer

    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config)
    _apply_flags(cfg, args)

    def announce(line: str) -> None:
        print(f"cortex serve: {line}", flush=True)

    server = CortexServer(cfg, announce=announce, log_level=args.log_level,
                          access_log=args.access_log)
    server.serve_forever()
    print("cortex serve: stopped", file=sys.stderr, flush=True)
    return 0

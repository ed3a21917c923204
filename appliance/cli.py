"""The ``appliance`` command: run a service, show status, manage the box.

Every sub-command takes ``--config`` (default ``$HEARTH_CONFIG`` or
``/etc/hearth/hearth.toml``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .config import Config, ConfigError, load_config, render_reference
from .services import SERVICES, run_service

__all__ = ["main"]

DEFAULT_CONFIG = "/etc/hearth/hearth.toml"


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH",
                        default=os.environ.get("HEARTH_CONFIG", DEFAULT_CONFIG),
                        help="hearth.toml (default: $HEARTH_CONFIG or %(default)s)")
    p = argparse.ArgumentParser(prog="appliance", description="Hearth appliance control")
    p.add_argument("--version", action="version", version=f"hearth {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", parents=[common], help="run one service in the foreground")
    run.add_argument("service", choices=sorted(SERVICES))

    status = sub.add_parser("status", parents=[common], help="what the box is doing")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    cfg = sub.add_parser("config", parents=[common], help="check or describe hearth.toml")
    cfg.add_argument("action", choices=["check", "reference"])
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "config" and args.action == "reference":
        sys.stdout.write(render_reference())
        return 0
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"appliance: bad configuration: {exc}", file=sys.stderr)
        return 2
    if args.command == "config":
        print(f"{args.config}: ok ({cfg.hearth.network})")
        return 0
    if args.command == "run":
        return run_service(args.service, cfg)
    if args.command == "status":
        return _status(cfg, as_json=args.json)
    raise AssertionError(args.command)  # argparse restricts the choices


def _status(cfg: Config, as_json: bool) -> int:
    from .node.status import NodeStatus, read_node_status

    report: dict[str, Any] = {"version": __version__, "network": cfg.hearth.network}
    node: NodeStatus | str = asyncio.run(read_node_status(cfg))
    report["node"] = node if isinstance(node, str) else node.as_dict()
    if as_json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(f"hearth {__version__} on {cfg.hearth.network}")
        if isinstance(node, str):
            print(f"  node: {node}")
        else:
            for line in node.describe():
                print(f"  {line}")
    return 0 if not isinstance(node, str) else 1

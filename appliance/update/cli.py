"""``appliance update install FILE [--force]`` and ``appliance update status``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from ..config import Config
from .bundle import BundleError
from .install import Progress, Rebooter, TryBootRebooter, install, offer
from .release import running_version
from .report import last_result_file, read_report

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction,  # type: ignore[type-arg]
               common: argparse.ArgumentParser) -> None:
    update = sub.add_parser("update", help="install a signed update bundle (.raucb); A/B slots")
    usub = update.add_subparsers(dest="update_command", required=True)
    inst = usub.add_parser("install", parents=[common],
                           help="verify FILE, write it to the other slot, reboot into it")
    inst.add_argument("file", type=Path)
    inst.add_argument("--force", action="store_true",
                      help="also install the same or an older version (a downgrade)")
    inst.add_argument("--no-reboot", action="store_true",
                      help="install only; the new slot is tried at the next reboot")
    status = usub.add_parser("status", parents=[common],
                             help="running version, both slots, the last update's result")
    status.add_argument("--json", action="store_true")


def run(cfg: Config, args: argparse.Namespace, rebooter: Rebooter | None = None) -> int:
    if args.update_command == "status":
        return _status(cfg, as_json=args.json)
    try:
        chosen = offer(args.file, cfg.update, force=args.force)
        print(f"{chosen.question[:-1]}: {args.file.name} verified, installing", flush=True)
        install(chosen, cfg.update, on_progress=_print_progress)
    except BundleError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return 1
    if args.no_reboot:
        print("installed: the new slot is tried at the next reboot")
        return 0
    print("installed: rebooting into the new slot", flush=True)
    (rebooter or TryBootRebooter()).reboot()
    return 0


def _print_progress(step: Progress) -> None:
    print(f"{step.percent:3d}% {step.step}", flush=True)


def _status(cfg: Config, *, as_json: bool) -> int:
    try:
        report = read_report(cfg.update.rauc, running_version(), last_result=last_result_file(cfg))
    except (BundleError, OSError, ValueError) as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps({**dataclasses.asdict(report), "line": report.line}, indent=2))
        return 0
    print(report.line)
    for label, slot in (("booted", report.booted), ("other", report.other)):
        if slot is not None:
            print(f"  {label:6} {slot.name} ({slot.bootname}): {slot.version or 'as flashed'}, "
                  f"{slot.boot_status or 'unknown'}{', primary' if slot.name == report.primary else ''}")
    return 0

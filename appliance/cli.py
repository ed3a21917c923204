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
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import __version__
from .config import Config, ConfigError, load_config, render_reference
from .services import SERVICES, run_service
from .tor import cli as tor_cli
from .update import cli as update_cli

if TYPE_CHECKING:
    from .control.messages import IndexerStatusReply

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

    wallet = sub.add_parser("wallet", help="register, list or remove watched wallets")
    wsub = wallet.add_subparsers(dest="wallet_command", required=True)
    add = wsub.add_parser("add", parents=[common], help="watch a wallet (descriptors or xpub)")
    add.add_argument("descriptors", nargs="+", metavar="DESCRIPTOR",
                     help="output descriptor(s) or an x/y/z/t/u/vpub key")
    add.add_argument("--birthday", type=int, metavar="HEIGHT",
                     help="first block that can hold the wallet's history")
    add.add_argument("--gap", type=int, help="receive gap limit (default from hearth.toml)")
    add.add_argument("--change-gap", type=int, help="change gap limit")
    add.add_argument("--label", default="", help="a name to recognise it by")
    wlist = wsub.add_parser("list", parents=[common], help="registered wallets")
    wlist.add_argument("--json", action="store_true")
    remove = wsub.add_parser("remove", parents=[common], help="forget a wallet and its index")
    remove.add_argument("id", help="wallet id (a unique prefix is enough)")

    pairing = sub.add_parser("pairing", help="paired computers (Noise) and setup-page browsers")
    psub = pairing.add_subparsers(dest="pairing_command", required=True)
    plist = psub.add_parser("list", parents=[common],
                            help="paired devices: Noise keys, browser session hashes")
    plist.add_argument("--json", action="store_true")
    prevoke = psub.add_parser("revoke", parents=[common], help="unpair one client, drop it now")
    prevoke.add_argument("key", help="the client's public key (a unique prefix is enough)")
    psub.add_parser("reset", parents=[common],
                    help="unpair every client and reopen pairing (= long button press)")
    psub.add_parser("open", parents=[common],
                    help="open the pairing window (= short button press)")
    pshow = psub.add_parser("show", parents=[common],
                            help="print the pairing code while the window is open")
    pshow.add_argument("--link", action="store_true",
                       help="the setup page's single-use link (the OLED's QR) instead")

    tower = sub.add_parser("tower", help="the watchtower: its address and what it watches")
    tsub = tower.add_subparsers(dest="tower_command", required=True)
    tsub.add_parser("url", parents=[common],
                    help="print the watchtower_url for Electrum (it contains the password)")
    tstatus = tsub.add_parser("status", parents=[common], help="sweeps, appointments, breaches")
    tstatus.add_argument("--json", action="store_true")
    backup = sub.add_parser("backup", help="the channel-state backup agent (docs/backup.md)")
    bsub = backup.add_subparsers(dest="backup_command", required=True)
    bsub.add_parser("status", parents=[common], help="clients, streams, bytes used")
    bsub.add_parser("export", parents=[common], help="write <data_dir>/backup/export.bin now")
    restore = sub.add_parser("restore", parents=[common],
                             help="restore the box's identity from a USB backup (.age) file")
    restore.add_argument("file", help="HEARTH/hearth-<box>-<time>.age from a stick")
    restore.add_argument("--phrase-file", metavar="PATH",
                         help="read the 12-word recovery phrase from PATH ('-' = stdin); "
                              "default: ask on the terminal, or read stdin if it is not one")
    restore.add_argument("--force", action="store_true",
                         help="replace this box's existing, different identity (it is lost)")
    usb = sub.add_parser("usb", help="USB backups")
    usub = usb.add_subparsers(dest="usb_command", required=True)
    ubackup = usub.add_parser("backup", parents=[common],
                              help="back up to a block device or image now (as if plugged in)")
    ubackup.add_argument("device")

    tor_cli.add_parser(sub, common)
    update_cli.add_parser(sub, common)

    display = sub.add_parser("display", help="the OLED outside the display service")
    dsub = display.add_subparsers(dest="display_command", required=True)
    dstep = dsub.add_parser("step", parents=[common],
                            help="show a 'Starting' page and leave it lit (first boot)")
    dstep.add_argument("step", help="what the box is doing, one short line")
    dstep.add_argument("--detail", default="", help="a longer line under it")
    dstep.add_argument("--error", action="store_true",
                       help="an error page (inverted title) instead of 'Starting'")

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
    if args.command in _CONTROL_COMMANDS:
        from .control import ControlError

        try:  # the one error path of every command that asks a running service
            return _CONTROL_COMMANDS[args.command](cfg, args)
        except ControlError as exc:  # refused, unreachable, or an answer it cannot show
            print(f"appliance: {exc}", file=sys.stderr)
            return 1
    if args.command == "restore":
        return _restore(cfg, args)
    if args.command == "tor":
        return tor_cli.run(cfg, args)
    if args.command == "update":
        return update_cli.run(cfg, args)
    if args.command == "display":
        return _display_step(cfg, args.step, args.detail, args.error)
    raise AssertionError(args.command)  # argparse restricts the choices


def _display_step(cfg: Config, step: str, detail: str, error: bool = False) -> int:
    from .devices.oled import OledError
    from .display.service import show_step

    try:
        show_step(cfg, step, detail, error=error)
    except OledError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return 1
    return 0


def _wallet(cfg: Config, args: argparse.Namespace) -> int:
    from .control import ask
    from .control.messages import WalletAdd, WalletList, WalletRemove

    endpoint = cfg.control_endpoint("indexer")
    if args.wallet_command == "add":
        added = ask(endpoint, WalletAdd(args.descriptors, birthday=args.birthday, gap=args.gap,
                                        change_gap=args.change_gap, label=args.label),
                    timeout=120)
        w = added.wallet
        verb = "registered" if added.new else "already registered"
        print(f"wallet {w.id} {verb} ({w.state}, {len(w.branches)} branches)")
    elif args.wallet_command == "list":
        wallets = ask(endpoint, WalletList())
        if args.json:
            print(json.dumps([w.to_wire() for w in wallets], indent=2))
        for w in [] if args.json else wallets:
            progress = f" backfill {w.backfill.percent}%" if w.backfill else ""
            print(f"{w.id}  {w.state}{progress}  {w.label}")
            for b in w.branches:
                print(f"    {b.descriptor}  used {b.used} derived {b.derived}")
    else:
        print(f"wallet {ask(endpoint, WalletRemove(args.id)).removed} removed")
    return 0


def _pairing(cfg: Config, args: argparse.Namespace) -> int:
    from .control import ControlError, ask
    from .control.messages import (
        PairingList,
        PairingOpen,
        PairingPayload,
        PairingReset,
        PairingRevoke,
    )

    endpoint = cfg.control_endpoint("indexer")
    cmd = args.pairing_command
    if cmd == "list":
        clients = ask(endpoint, PairingList())
        if args.json:
            print(json.dumps([c.to_wire() for c in clients], indent=2))
        for c in [] if args.json else clients:
            state = "connected" if c.connected else ""
            kind = "browser" if c.kind == "web" else "noise"
            print(f"{c.key}  {kind:7}  {c.label or '-'}  {state}")
    elif cmd == "revoke":
        print(f"revoked {ask(endpoint, PairingRevoke(args.key)).revoked}")
    elif cmd == "reset":
        print(f"{ask(endpoint, PairingReset()).revoked} clients revoked; pairing is open")
    elif cmd == "open":
        left = ask(endpoint, PairingOpen()).window_seconds_left
        print(f"pairing open for {left or 0:.0f} s")
    else:
        payload = ask(endpoint, PairingPayload())
        if payload.payload is None:
            raise ControlError("pairing is closed (appliance pairing open)")
        if args.link and not payload.setup_url:
            raise ControlError("the setup page is off ([setup] port)")
        print(payload.setup_url if args.link else payload.payload)
    return 0


def _tower(cfg: Config, args: argparse.Namespace) -> int:
    from .control import ControlError, ask
    from .control.messages import TowerStatus, TowerUrl

    endpoint = cfg.control_endpoint("tower")
    if args.tower_command == "url":
        url = ask(endpoint, TowerUrl()).url
        if url is None:
            raise ControlError("the tower's HTTP port is off ([tower] http_port)")
        print(url)
    else:
        status = ask(endpoint, TowerStatus())
        if args.json:
            print(json.dumps(status.to_wire(), indent=2, sort_keys=True))
        else:
            c = status.counters
            print(f"tower {status.tower_id} at height {status.height}: "
                  f"{c['channels']} channels / {c['sweeps']} sweeps, "
                  f"{c['users']} users / {c['appointments']} appointments, "
                  f"{c['breaches']} breaches answered")
    return 0


def _backup(cfg: Config, args: argparse.Namespace) -> int:
    from .control import ask
    from .control.messages import BackupStatus, Export

    endpoint = cfg.control_endpoint("backup")
    if args.backup_command == "export":
        result = ask(endpoint, Export(), timeout=300)
        print(f"{result.streams} streams exported to {result.path}")
    else:
        print(json.dumps(ask(endpoint, BackupStatus()).to_wire(), indent=2))
    return 0


def _read_phrase(source: str | None) -> str:
    import getpass

    if source is None and sys.stdin.isatty():
        return getpass.getpass("recovery phrase (12 words): ")
    if source is None or source == "-":
        return sys.stdin.readline()
    with open(source, encoding="utf-8") as fh:
        return fh.read(4096)


def _restore(cfg: Config, args: argparse.Namespace) -> int:
    from .usb.archive import BackupError, decrypt_backup
    from .usb.restore import RestoreError, apply_restore, normalize_phrase

    try:
        with open(args.file, "rb") as fh:
            data = fh.read()
        phrase = normalize_phrase(_read_phrase(args.phrase_file))
        if len(phrase.split()) != 12:
            raise RestoreError("the recovery phrase has 12 words")
        contents = decrypt_backup(data, phrase)
        box = apply_restore(cfg, contents, force=args.force)
    except OSError as exc:
        print(f"appliance: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    except (BackupError, RestoreError) as exc:
        print(f"appliance: restore refused: {exc}", file=sys.stderr)
        return 1
    print(f"restored box {box} (backup made {contents.metadata.get('created', '?')}); "
          "restart the services: supervisorctl restart all")
    return 0


def _usb(cfg: Config, args: argparse.Namespace) -> int:
    from .control import ask
    from .control.messages import UsbBackup

    result = ask(cfg.control_endpoint("usb"), UsbBackup(os.path.abspath(args.device)),
                 timeout=300)
    print(f"{result.message} {result.path} ({result.seconds} s)")
    return 0 if result.ok else 1


#: The commands that ask a running service over its control socket.
_CONTROL_COMMANDS: dict[str, Callable[[Config, argparse.Namespace], int]] = {
    "wallet": _wallet, "pairing": _pairing, "tower": _tower, "backup": _backup, "usb": _usb,
}


def _status(cfg: Config, as_json: bool) -> int:
    from .node.status import NodeStatus, read_node_status
    from .status import Phase, describe_states, read_status_once

    report: dict[str, Any] = {"version": __version__, "network": cfg.hearth.network}
    # The status bus: every running service's own word, or "stale" if it went quiet.
    bus = read_status_once(cfg.hearth.run_dir) if cfg.hearth.run_dir.is_dir() else {}
    report["services"] = {name: state.as_dict() for name, state in bus.items()}
    unhealthy = [name for name, st in bus.items()
                 if st.stale or (st.status is not None and st.status.phase == Phase.ERROR)]
    node: NodeStatus | str = asyncio.run(read_node_status(cfg))
    report["node"] = node if isinstance(node, str) else node.as_dict()
    indexer = _indexer_status(cfg)
    report["indexer"] = indexer if isinstance(indexer, str) else indexer.to_wire()
    if as_json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(f"hearth {__version__} on {cfg.hearth.network}")
        if isinstance(node, str):
            print(f"  node: {node}")
        else:
            for line in node.describe():
                print(f"  {line}")
        if isinstance(indexer, str):
            print(f"  indexer: {indexer}")
        else:
            print(f"  indexer: height {indexer.height}, {indexer.wallets} wallets, "
                  f"{indexer.scripts} scripts, {indexer.mempool_txs} mempool txs, "
                  f"{indexer.electrum['sessions']} Electrum clients")
        if bus:
            print("services:")
            for line in describe_states(bus):
                print(f"  {line}")
    return 0 if not isinstance(node, str) and not unhealthy else 1


def _indexer_status(cfg: Config) -> IndexerStatusReply | str:
    """The indexer's status, or why there is none (status shows what it can)."""
    from .control import ControlError, ask
    from .control.messages import IndexerStatus

    try:
        return ask(cfg.control_endpoint("indexer"), IndexerStatus(), timeout=5)
    except ControlError as exc:
        return f"unavailable: {exc}"

"""``appliance-client backup ...``: set up the CLN plugin, restore a node, push and fetch files.

    appliance-client backup setup-cln --hsm-secret FILE --db FILE
    appliance-client backup restore --hsm-secret FILE --out FILE
    appliance-client backup push FILE|- [--name NAME]
    appliance-client backup fetch NAME --out FILE [--generation N]
    appliance-client backup list

Pushed files (lnd's ``channel.backup``, an Electrum ``export_channel_backup`` string)
are sealed to this computer's client key (``<state>/client_key``) unless ``--recipient``
names another public key, each push a new version (the box keeps the last few). Their
stream id is an HMAC of the name under the client key, so nobody else can find them.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import sys
from pathlib import Path
from typing import Any

from ..backup.sealed import SealedError, seal, unseal
from ..identity import write_secret_file
from ..transport.noise import Keypair
from .backup import DEFAULT_PORT, GONE, BackupClient, BackupRefused, BoxAddress
from .cln import RestoreError, cln_keys, rebuild_database, unseal_change, unseal_snapshot
from .cln_plugin import CONFIG_NAME

__all__ = ["add_parser", "run"]

_U32 = 1 << 32


def add_parser(sub: Any) -> None:
    p = sub.add_parser("backup", help="channel-state and file backups on the box")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="the box's backup port")
    bsub = p.add_subparsers(dest="backup_command", required=True)
    s = bsub.add_parser("setup-cln", help="configure the Core Lightning plugin for this node")
    s.add_argument("--hsm-secret", required=True, type=Path, help="the node's hsm_secret (read once)")
    s.add_argument("--db", required=True, type=Path, help="lightningd.sqlite3")
    s.add_argument("--retry-s", type=float, default=60.0,
                   help="how long a db_write may wait for an unreachable box before lightningd stops")
    r = bsub.add_parser("restore", help="rebuild the node's database from the box")
    r.add_argument("--hsm-secret", required=True, type=Path)
    r.add_argument("--out", required=True, type=Path, help="the database to write (must not exist)")
    pu = bsub.add_parser("push", help="store a new version of a file (lnd SCB, Electrum backup)")
    pu.add_argument("file", help="the file, or - for standard input")
    pu.add_argument("--name", help="the name to fetch it by (default: the file's name)")
    pu.add_argument("--recipient", help="seal to this public key (hex) instead of the client key")
    f = bsub.add_parser("fetch", help="get a pushed file back")
    f.add_argument("name")
    f.add_argument("--out", required=True, type=Path)
    f.add_argument("--generation", type=int, help="an older kept version")
    bsub.add_parser("list", help="what this client stores on the box")


def _client_key(state: Path) -> Keypair:
    try:
        return Keypair((state / "client_key").read_bytes())
    except FileNotFoundError:
        raise SystemExit("appliance-client: no client key: pair first (appliance-client pair)") from None


def _read_secret(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SystemExit(f"appliance-client: cannot read {path}: {exc.strerror}") from None


def file_stream(key: Keypair, name: str) -> str:
    return hmac.new(key.secret, b"hearth/backup/file/v1/" + name.encode(), hashlib.sha256).hexdigest()


def _file_context(sid: str, version: int) -> bytes:
    return f"hearth-file|{sid}|{version}".encode()


def run(state: Path, args: argparse.Namespace) -> int:
    try:
        return int(asyncio.run(_run(state, args)))
    except BackupRefused as exc:
        if exc.code == "disk-full":
            print("appliance-client: the box's disk is full: this backup was NOT stored. "
                  "Free space on the box, then run the same command again.", file=sys.stderr)
        else:
            print(f"appliance-client: the box refused: {exc} ({exc.code})", file=sys.stderr)
    except GONE as exc:
        print(f"appliance-client: backup box unreachable on port {args.port}: {exc}", file=sys.stderr)
    except (RestoreError, SealedError, ValueError) as exc:
        print(f"appliance-client: {exc}", file=sys.stderr)
    return 1


async def _run(state: Path, args: argparse.Namespace) -> int:
    cmd = args.backup_command
    box = BoxAddress.from_state(state, args.port)
    key = _client_key(state)
    if cmd == "setup-cln":
        keys = cln_keys(_read_secret(args.hsm_secret))
        write_secret_file(state / CONFIG_NAME, json.dumps({
            "db": str(args.db.resolve()), "node_id": keys.node_id.hex(), "stream": keys.stream,
            "box": box.as_dict(), "retry_s": args.retry_s}, indent=1).encode())
        print(f"node {keys.node_id.hex()}: backups go to {box.host}:{box.port}")
        print("start lightningd with --plugin=<venv>/bin/hearth-cln-backup")
        return 0
    client = await BackupClient.connect(box, key)
    try:
        if cmd == "restore":
            return await _restore(client, args)
        if cmd == "push":
            return await _push(client, key, args)
        if cmd == "fetch":
            sid = file_stream(key, args.name)
            data = await client.read(sid, args.generation)
            plain = unseal(key.secret, data.snapshot, _file_context(sid, data.snapshot_version))
            write_secret_file(args.out, plain)
            print(f"{args.name} version {data.snapshot_version}: {len(plain)} bytes -> {args.out}")
            return 0
        reply = await client.request({"op": "list"})
        print(json.dumps(reply, indent=2))
        return 0
    finally:
        client.close()


async def _restore(client: BackupClient, args: argparse.Namespace) -> int:
    keys = cln_keys(_read_secret(args.hsm_secret))
    info = await client.request({"op": "info", "stream": keys.stream})
    if not info["exists"]:
        raise RestoreError(f"the box holds no backup of node {keys.node_id.hex()}")
    data = await client.read(keys.stream)
    snapshot = unseal_snapshot(keys.node_secret, keys.stream, data.snapshot_version, data.snapshot)
    changes: list[tuple[int, list[str]]] = []
    expect = (data.snapshot_version + 1) % _U32
    for version, blob in data.records:
        if version != expect:
            raise RestoreError(f"the backup log skips from {(expect - 1) % _U32} to {version}")
        changes.append((version, unseal_change(keys.node_secret, keys.stream, version, blob)))
        expect = (version + 1) % _U32
    reached = rebuild_database(args.out, snapshot, changes)
    print(f"restored node {keys.node_id.hex()} to data_version "
          f"{reached if changes else data.snapshot_version}: {args.out}")
    return 0


async def _push(client: BackupClient, key: Keypair, args: argparse.Namespace) -> int:
    if args.file == "-":
        if not args.name:
            raise ValueError("--name is needed when reading standard input")
        plain = sys.stdin.buffer.read()
    else:
        plain = Path(args.file).read_bytes()
    name = args.name or Path(args.file).name
    sid = file_stream(key, name)
    info = await client.request({"op": "info", "stream": sid})
    version = (int(info["version"]) + 1) % _U32 if info["exists"] else 1
    recipient = bytes.fromhex(args.recipient) if args.recipient else key.public
    blob = seal(recipient, plain, _file_context(sid, version))
    reply = await client.request({"op": "snapshot", "stream": sid, "kind": "file",
                                  "version": version}, blob)
    print(f"{name}: version {version} stored ({len(plain)} bytes; kept versions "
          f"{', '.join(map(str, reply['generations']))})")
    return 0

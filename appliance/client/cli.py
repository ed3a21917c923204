"""``appliance-client``: pair a computer with the box, then tunnel stock wallets over Noise.

    appliance-client pair 'HEARTH:...' [--label NAME] [--tor [HOST:PORT] --onion ADDR.onion]
    appliance-client tunnel [--listen 127.0.0.1:50001] [--tor [HOST:PORT] | --proxy socks5://H:P]
    appliance-client tunnel --to tower [--listen 127.0.0.1:9814]
    appliance-client status
    appliance-client wallet add KEY_OR_DESCRIPTOR... [--birthday HEIGHT] [--label NAME]
    appliance-client wallet list | remove ID
    appliance-client backup setup-cln|restore|push|fetch|list   (see backup_cli.py)

``pair`` makes this computer's key (``<state>/client_key``, 0600) if needed, connects to
the box named in the pairing code over BOLT-08, redeems the one-time token and stores
the box's key and address (``<state>/box.json``). ``tunnel`` then listens on loopback and
carries each local Electrum connection (newline-delimited JSON) over its own Noise
channel, so desktop Electrum or Sparrow get the authenticated channel unchanged:
``electrum --oneserver --server 127.0.0.1:50001:t``.

Away from home, ``--tor`` (Tor's SOCKS port, default 127.0.0.1:9050) or ``--proxy``
carries the same Noise channel to the box's onion address, which the box tells a client
when it pairs (``box.json`` ``onion``); the Noise handshake still checks the box's key,
so the proxy and the Tor network see only ciphertext and cannot stand in for the box.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..identity import write_secret_file
from ..pairing.payload import PairingPayload, PayloadError
from ..transport.noise import Keypair
from ..transport.stream import STREAM_ERRORS, NoiseStream, Opener, connect, pipe
from . import backup_cli
from .socks import DEFAULT_TOR, SocksProxy

__all__ = ["main"]

_GONE: tuple[type[BaseException], ...] = (*STREAM_ERRORS, ConnectionError, OSError)


def _state_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hearth-client"


def _client_key(state: Path) -> Keypair:
    path = state / "client_key"
    if not path.exists():
        write_secret_file(path, secrets.token_bytes(32))
    return Keypair(path.read_bytes())


def _box(state: Path) -> dict[str, Any]:
    try:
        box: dict[str, Any] = json.loads((state / "box.json").read_text())
    except FileNotFoundError:
        raise SystemExit("appliance-client: not paired yet: appliance-client pair 'HEARTH:...'") from None
    return box


async def _request(stream: NoiseStream, method: str, params: Any,
                   timeout: float = 30.0) -> Any:
    await stream.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                                  "params": params}).encode() + b"\n")
    buffer = b""
    while b"\n" not in buffer:
        buffer += await stream.recv(timeout=timeout)
    reply = json.loads(buffer.split(b"\n", 1)[0])
    if reply.get("error"):
        raise SystemExit(f"appliance-client: {reply['error'].get('message')}")
    return reply.get("result")


async def _pair(state: Path, code: str, label: str, proxy: SocksProxy | None = None,
                onion: str | None = None) -> int:
    try:
        payload = PairingPayload.decode(code)
    except PayloadError as exc:
        print(f"appliance-client: {exc}", file=sys.stderr)
        return 2
    key = _client_key(state)
    host = onion or payload.host
    try:
        stream = await connect(host, payload.port, key, payload.pubkey, timeout=_timeout(proxy),
                               open_connection=_opener(proxy))
    except _GONE as exc:
        print(f"appliance-client: cannot reach the box at {host}:{payload.port}: {exc}",
              file=sys.stderr)
        return 1
    try:
        try:
            reply = await _request(stream, "hearth.pair",
                                   {"token": payload.token.hex(), "label": label})
        except _GONE:
            print("appliance-client: the box refused the pairing code (expired or used?)",
                  file=sys.stderr)
            return 1
    finally:
        stream.close()
    box = {"key": payload.pubkey.hex(), "host": payload.host, "port": payload.port}
    # A box with tor on says its onion address (older boxes do not: keep --onion's).
    told = reply.get("onion") if isinstance(reply, dict) else None
    if told or onion:
        box["onion"] = str(told or onion)
    (state / "box.json").write_text(json.dumps(box))
    print(f"paired with the box {payload.pubkey.hex()[:16]}… at {payload.host}:{payload.port}")
    print(f"this computer's key: {key.public.hex()}")
    return 0


def _opener(proxy: SocksProxy | None) -> Opener | None:
    return proxy.open_connection if proxy is not None else None


def _timeout(proxy: SocksProxy | None) -> float:
    # Reaching an onion service builds two 3-hop circuits and a rendezvous: allow for it.
    return 15.0 if proxy is None else 90.0


def _where(box: dict[str, Any], proxy: SocksProxy | None) -> str:
    """The host to connect to: the LAN address, or the onion address through a proxy."""
    if proxy is None:
        return str(box["host"])
    if not box.get("onion"):
        raise SystemExit("appliance-client: the box's onion address is not known (pair again "
                         "on the LAN with a box that has tor on, or pair --onion ADDRESS)")
    return str(box["onion"])


#: the box's Noise port per service when the pairing code did not say (config defaults)
_SERVICE_PORTS = {"tower": 9816}


async def _tunnel(state: Path, listen: str, to: str = "electrum", box_port: int | None = None,
                  proxy: SocksProxy | None = None) -> int:
    box = _box(state)
    if proxy is not None and to != "electrum":
        raise SystemExit("appliance-client: only the Electrum tunnel is an onion service")
    host_name = _where(box, proxy)
    if box_port is not None:
        box = {**box, "port": box_port}
    elif to != "electrum":
        box = {**box, "port": box.get("ports", {}).get(to, _SERVICE_PORTS[to])}
    key = _client_key(state)
    host, _, port = listen.rpartition(":")
    live: set[asyncio.Task[Any]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        live.add(task)
        try:
            stream = await connect(host_name, int(box["port"]), key, bytes.fromhex(box["key"]),
                                   timeout=_timeout(proxy), open_connection=_opener(proxy))
        except _GONE as exc:
            print(f"appliance-client: box unreachable: {exc}", file=sys.stderr)
            writer.close()
            return
        except asyncio.CancelledError:
            writer.close()
            return
        try:
            await pipe(stream, reader, writer)
        except asyncio.CancelledError:
            # Stopping (Ctrl-C): end this connection quietly; asyncio's stream callback
            # would print a traceback for a handler that ends cancelled.
            writer.close()
        finally:
            stream.close()
            live.discard(task)

    # Ctrl-C / TERM end the tunnel: stop listening, end each connection, exit 0.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = await asyncio.start_server(serve, host or "127.0.0.1", int(port))
    bound = server.sockets[0].getsockname()
    via = "" if proxy is None else f" via SOCKS {proxy.host}:{proxy.port}"
    print(f"tunnel: 127.0.0.1:{bound[1]} -> box {host_name}:{box['port']} {to} (Noise){via}",
          flush=True)
    async with server:
        await stop.wait()
        server.close()
        for task in list(live):
            task.cancel()
        await asyncio.gather(*live, return_exceptions=True)
    print("tunnel: stopped", flush=True)
    return 0


async def _ask(state: Path, method: str, params: Any, timeout: float = 30.0) -> Any:
    """One hearth.* request over a fresh Noise channel (SystemExit with a message)."""
    box = _box(state)
    try:
        stream = await connect(box["host"], int(box["port"]), _client_key(state),
                               bytes.fromhex(box["key"]), timeout=15)
    except _GONE as exc:
        raise SystemExit(f"appliance-client: cannot reach the box at {box['host']}:"
                         f"{box['port']}: {exc}") from None
    try:
        await _request(stream, "server.version", ["appliance-client", "1.4"])
        return await _request(stream, method, params, timeout)
    except _GONE:
        raise SystemExit("appliance-client: the box closed the connection "
                         "(not paired any more?)") from None
    finally:
        stream.close()


async def _status(state: Path) -> int:
    print(json.dumps(await _ask(state, "hearth.status", []), indent=2))
    return 0


async def _wallet(state: Path, args: argparse.Namespace) -> int:
    """The box's ``appliance wallet`` commands, over the paired Noise channel."""
    if args.wallet_command == "add":
        result = await _ask(state, "hearth.wallet.add", {
            "descriptors": args.descriptors, "birthday": args.birthday, "label": args.label},
            timeout=180)
        verb = "registered" if result["new"] else "already registered"
        print(f"wallet {result['id']} {verb} ({result['state']}, "
              f"{len(result['branches'])} branches)")
    elif args.wallet_command == "list":
        for w in await _ask(state, "hearth.wallet.list", {}):
            progress = f" backfill {w['backfill']['percent']}%" if w["backfill"] else ""
            print(f"{w['id']}  {w['state']}{progress}  {w['label']}")
    else:
        print(f"wallet {(await _ask(state, 'hearth.wallet.remove', {'id': args.id}))['removed']}"
              " removed")
    return 0


def _proxy_options(parser: argparse.ArgumentParser) -> None:
    via = parser.add_mutually_exclusive_group()
    via.add_argument("--tor", nargs="?", const=DEFAULT_TOR, metavar="HOST:PORT",
                     help=f"reach the box's onion address through Tor's SOCKS port "
                          f"(default {DEFAULT_TOR}; Tor Browser's is 127.0.0.1:9150)")
    via.add_argument("--proxy", metavar="socks5://HOST:PORT",
                     help="the same through any SOCKS5 proxy that resolves .onion names")


def _proxy(args: argparse.Namespace) -> SocksProxy | None:
    text = args.tor or args.proxy
    if text is None:
        return None
    try:
        return SocksProxy.parse(text)
    except ValueError as exc:
        raise SystemExit(f"appliance-client: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="appliance-client",
                                description="pair with a Hearth box and tunnel wallets to it")
    p.add_argument("--state-dir", help="where this computer's key and the box's address live")
    sub = p.add_subparsers(dest="command", required=True)
    pair = sub.add_parser("pair", help="pair using the code shown on the box")
    pair.add_argument("code")
    pair.add_argument("--label", default=os.uname().nodename)
    pair.add_argument("--onion", help="the box's onion address (appliance tor address), to "
                                      "pair over Tor instead of at the code's LAN address")
    _proxy_options(pair)
    tunnel = sub.add_parser("tunnel", help="let a stock Electrum wallet connect via the box")
    tunnel.add_argument("--listen", default=None,
                        help="local address (default 127.0.0.1:50001, for the tower :9814)")
    tunnel.add_argument("--to", choices=["electrum", "tower"], default="electrum",
                        help="electrum: wallets' server; tower: the watchtower's HTTP "
                             "(Electrum watchtower_url=http://127.0.0.1:9814, TEOS clients)")
    tunnel.add_argument("--box-port", type=int, help="the box's Noise port for that service")
    _proxy_options(tunnel)
    sub.add_parser("status", help="ask the box what it is doing")
    wallet = sub.add_parser("wallet", help="register, list or remove the wallets the box watches")
    wsub = wallet.add_subparsers(dest="wallet_command", required=True)
    wadd = wsub.add_parser("add", help="watch a wallet (an x/y/z/t/u/vpub key or descriptors)")
    wadd.add_argument("descriptors", nargs="+", metavar="KEY_OR_DESCRIPTOR")
    wadd.add_argument("--birthday", type=int, metavar="HEIGHT",
                      help="first block that can hold the wallet's history")
    wadd.add_argument("--label", default="", help="a name to recognise it by")
    wsub.add_parser("list", help="the wallets the box watches")
    wremove = wsub.add_parser("remove", help="forget a wallet")
    wremove.add_argument("id", help="wallet id (a unique prefix is enough)")
    backup_cli.add_parser(sub)
    args = p.parse_args(argv)
    state = _state_dir(args.state_dir)
    try:
        if args.command == "pair":
            proxy = _proxy(args)
            if args.onion and proxy is None:
                proxy = SocksProxy.parse(DEFAULT_TOR)
            return asyncio.run(_pair(state, args.code, args.label, proxy, args.onion))
        if args.command == "backup":
            return backup_cli.run(state, args)
        if args.command == "tunnel":
            listen = args.listen or ("127.0.0.1:9814" if args.to == "tower" else "127.0.0.1:50001")
            return asyncio.run(_tunnel(state, listen, args.to, args.box_port, _proxy(args)))
        if args.command == "wallet":
            return asyncio.run(_wallet(state, args))
        return asyncio.run(_status(state))
    except KeyboardInterrupt:
        return 0

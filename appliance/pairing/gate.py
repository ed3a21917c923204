"""The Noise (BOLT-08) listener: paired clients get the Electrum server, others nothing.

After the handshake the client's static key is known. A whitelisted key gets an Electrum
session on the same protocol core as TCP/TLS, plus the ``hearth.*`` methods (wallet
registration, status). An unknown key must send ``hearth.pair`` with the window's token
as its first message; anything else, or a wrong or expired token, closes the connection
without a word, so a scanner learns nothing but that the port speaks BOLT-08.

Paired clients draw from the session pool kept for them (``SessionManager``'s paired
share), which no unauthenticated client can fill. An unknown key gets one small line
(``_PAIR_MAX_LINE``) and ``_FIRST_MESSAGE_TIMEOUT`` to pair, with at most
``_MAX_PAIRING_PER_ADDRESS`` such attempts at once from one address.

Payload over the channel: newline-delimited JSON, exactly as over TCP. A message up to
65,535 bytes travels as one Noise message; a larger one (a header chunk, a long history)
is split across several, and the receiver reassembles lines.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..electrum.framing import LineFramer, OversizeLineError
from ..electrum.server import SessionManager
from ..identity import NodeKey
from ..jsonguard import json_cost_error
from ..peers import AddressCounts, peer_address
from ..ratelog import RateLimitedLog
from ..transport.noise import MAX_MESSAGE_SIZE, Keypair
from ..transport.stream import STREAM_ERRORS, NoiseListener, NoiseServer, NoiseStream, start_server
from .payload import PairingPayload
from .store import Whitelist
from .window import PairingWindow

__all__ = ["HearthMethod", "NoiseGate", "detect_lan_ipv4"]

log = logging.getLogger("pairing")

#: hearth.* method handler: (params, client public key) -> result
HearthMethod = Callable[[Any, bytes], Awaitable[Any]]

_FIRST_MESSAGE_TIMEOUT = 10.0
#: hearth.pair with a token and a label is ~200 bytes
_PAIR_MAX_LINE = 4096
_MAX_PAIRING_PER_ADDRESS = 4
#: what a vanished, revoked or misbehaving peer raises
_GONE: tuple[type[BaseException], ...] = (*STREAM_ERRORS, ConnectionError, OSError)
_BAD_FIRST_MESSAGE: tuple[type[BaseException], ...] = (
    *_GONE, ValueError, AttributeError, RecursionError, OversizeLineError)


def detect_lan_ipv4() -> str:
    """This host's LAN IPv4 address for the pairing QR (no packet is sent)."""
    candidates: list[str] = []
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            candidates.append(str(info[4][0]))
    with contextlib.suppress(OSError), open("/proc/net/fib_trie") as fh:
        # Local addresses of the routing table: the last "/32 host LOCAL" entries.
        lines = fh.read().splitlines()
        for i, line in enumerate(lines):
            if "/32 host LOCAL" in line and i > 0:
                candidates.append(lines[i - 1].split()[-1])
    for address in candidates:
        ip = ipaddress.IPv4Address(address)
        if ip.is_private and not ip.is_loopback and not ip.is_link_local:
            return address
    return "127.0.0.1"


class _NoiseTransport:
    """MessageTransport for an Electrum session over a Noise stream."""

    def __init__(self, stream: NoiseStream) -> None:
        self.stream = stream

    def send_line(self, line: bytes) -> None:
        data = line + b"\n"
        try:
            for i in range(0, len(data), MAX_MESSAGE_SIZE):
                self.stream.write(data[i:i + MAX_MESSAGE_SIZE])
        except _GONE:
            self.stream.abort()

    def close(self) -> None:
        self.stream.close()

    async def drain(self) -> None:
        with contextlib.suppress(*_GONE):
            await self.stream.drain()


@dataclass
class GateCounters:
    paired: int = 0
    refused: int = 0  # unknown keys turned away
    connections: int = 0
    sessions_refused: int = 0  # paired clients turned away: their pool was full


@dataclass
class NoiseGate(NoiseListener):
    node_key: NodeKey
    whitelist: Whitelist
    window: PairingWindow
    sessions: SessionManager
    hearth_methods: dict[str, HearthMethod]
    advertise_host: str = ""
    #: the box's .onion address (tor on): told to a client when it pairs, for use away
    #: from home; old clients ignore the extra field of the reply.
    onion: str | None = None
    window_seconds: float = 300.0
    counters: GateCounters = field(default_factory=GateCounters)
    server: NoiseServer | None = None
    live: dict[bytes, set[NoiseStream]] = field(default_factory=dict)
    max_line: int = 1_000_000
    #: False while the owner has not yet acknowledged the recovery phrase on the OLED
    #: (first boot): no QR is shown and no token is redeemed until then.
    pairing_allowed: Callable[[], bool] = lambda: True
    pairing_attempts: AddressCounts = field(default_factory=AddressCounts)
    refusals: RateLimitedLog = field(
        default_factory=lambda: RateLimitedLog(log, "refused Noise clients"))

    async def start(self, host: str, port: int) -> None:
        if not self.whitelist.clients:
            self.window.open(None)  # first boot: open until the first device pairs
        self.server = await start_server(self._serve, host, port, Keypair.of(self.node_key))
        log.info("serving Noise (BOLT-08) on port %d; %d paired clients; pairing %s",
                 self.port, len(self.whitelist.clients),
                 "open" if self.window.is_open else "closed")

    # --- pairing control --------------------------------------------------------------------
    def payload(self) -> str | None:
        """The QR text while the window is open, else None."""
        if not self.window.is_open or self.server is None or not self.pairing_allowed():
            return None
        return PairingPayload(self.node_key.public, self.host(), self.port,
                              self.window.token).encode()

    def host(self) -> str:
        """The address clients on the LAN reach the box at."""
        return self.advertise_host or detect_lan_ipv4()

    def open_window(self) -> None:
        self.window.open(self.window_seconds)
        log.info("pairing window open for %.0f s", self.window_seconds)

    def revoke(self, pubkey: bytes) -> bool:
        found = self.whitelist.revoke(pubkey)
        self._drop(pubkey)
        return found

    def reset(self) -> int:
        """Revoke every client, drop their connections at once, reopen pairing."""
        revoked = self.whitelist.reset()
        for pubkey in list(self.live):
            self._drop(pubkey)
        self.window.open(None)
        log.info("pairing reset: %d clients revoked; window open", len(revoked))
        return len(revoked)

    def _drop(self, pubkey: bytes) -> None:
        for stream in self.live.pop(pubkey, set()):
            stream.abort()

    # --- connections --------------------------------------------------------------------------
    async def _serve(self, stream: NoiseStream) -> None:
        pubkey = stream.remote_static
        self.counters.connections += 1
        address = peer_address(stream.peername)
        framer = LineFramer(self.max_line)
        pending: list[bytes] = []
        if pubkey not in self.whitelist:
            if not await self._pair_from(address, stream, pubkey, framer, pending):
                self.counters.refused += 1
                stream.abort()
                return
        session = self.sessions.open_session(_NoiseTransport(stream), paired=True,
                                             name=f"noise {pubkey.hex()[:16]}", address=address)
        if session is None:
            self.counters.sessions_refused += 1
            stream.close()
            return
        self.live.setdefault(pubkey, set()).add(stream)
        try:
            for line in pending:
                await self._dispatch(stream, session, line, pubkey)
            while not session.closed and pubkey in self.whitelist:
                message = await stream.recv()
                try:
                    lines = framer.feed(message)
                except OversizeLineError as exc:
                    await session.message_too_large(exc.max_size)
                    break
                for line in lines:
                    await self._dispatch(stream, session, line, pubkey)
        except _GONE:
            pass  # the client left, or was revoked
        finally:
            session.close()
            await session.wait_closed()
            streams = self.live.get(pubkey)
            if streams is not None:
                streams.discard(stream)
                if not streams:
                    self.live.pop(pubkey, None)

    async def _pair_from(self, address: str, stream: NoiseStream, pubkey: bytes,
                         framer: LineFramer, pending: list[bytes]) -> bool:
        if not self.pairing_attempts.acquire(address, _MAX_PAIRING_PER_ADDRESS):
            self.refusals("refused an unpaired client: too many pairing attempts at once")
            return False
        framer.max_size = _PAIR_MAX_LINE  # until the key is paired
        try:
            return await self._pair(stream, pubkey, framer, pending)
        finally:
            framer.max_size = self.max_line
            self.pairing_attempts.release(address)

    async def _pair(self, stream: NoiseStream, pubkey: bytes, framer: LineFramer,
                    pending: list[bytes]) -> bool:
        """An unknown key: its first message must redeem the pairing token."""
        try:
            lines: list[bytes] = []
            while not lines:
                lines = framer.feed(await stream.recv(timeout=_FIRST_MESSAGE_TIMEOUT))
            request = json.loads(lines[0])
            params = request.get("params") or {}
            token = bytes.fromhex(str(params.get("token", "")))
            label = str(params.get("label", ""))[:64]
        except _BAD_FIRST_MESSAGE:
            return False
        if (request.get("method") != "hearth.pair" or not self.pairing_allowed()
                or not self.window.redeem(token)):
            self.refusals("refused an unpaired client")  # no key, no token in the log line
            return False
        self.whitelist.add(pubkey, label)
        self.counters.paired += 1
        log.info("paired a new client %s (%s)", pubkey.hex()[:16], label or "no label")
        result: dict[str, Any] = {"paired": True, "box": self.node_key.public.hex()}
        if self.onion:
            result["onion"] = self.onion
        reply = {"jsonrpc": "2.0", "id": request.get("id"), "result": result}
        await stream.send(json.dumps(reply).encode() + b"\n")
        pending.extend(lines[1:])
        return True

    async def _dispatch(self, stream: NoiseStream, session: Any, line: bytes,
                        pubkey: bytes) -> None:
        method = _method_of(line)
        if method is None or not method.startswith("hearth."):
            await session.handle_message(line)
            return
        request = json.loads(line)
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request.get("id")}
        handler = self.hearth_methods.get(method)
        if handler is None:
            reply["error"] = {"code": -32601, "message": f"unknown method {method}"}
        else:
            try:
                reply["result"] = await handler(request.get("params"), pubkey)
            except (ValueError, KeyError, TypeError) as exc:
                reply["error"] = {"code": 1, "message": str(exc)}
        _NoiseTransport(stream).send_line(json.dumps(reply).encode())


def _method_of(line: bytes) -> str | None:
    """The method of a single JSON-RPC request (batches go to the Electrum core)."""
    if not line.lstrip().startswith(b"{") or b'"hearth.' not in line:
        return None
    if json_cost_error(line) is not None:
        return None  # the Electrum core refuses it, unparsed
    try:
        request = json.loads(line)
    except ValueError:
        return None
    method = request.get("method") if isinstance(request, dict) else None
    return method if isinstance(method, str) else None

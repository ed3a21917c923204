"""Sessions and listeners: ``SessionManager`` fans out backend changes, ``ElectrumServer``
accepts TCP and TLS connections.

Wiring (the indexer's composition root)::

    manager = SessionManager(backend, info=ServerInfo(hosts=...), share=FairShare(...))
    server = ElectrumServer(manager, host=None, tcp_port=50001, tls_port=50002,
                            ssl_context=server_ssl_context(cert_path, key_path))
    await server.start()      # registers the backend listeners, then listens
    ...
    await server.close()      # stops listening, closes every session

The backend calls ``on_tip`` / ``on_scripthashes`` after it has applied a change. The
callbacks only record what changed and wake one notifier task, which computes each
changed scripthash's status once, however many sessions subscribe to it, and hands the
encoded notification to those sessions. One task does it all, in order, so a slow
status computation can never let an older status overtake a newer one.

Fair sharing (:mod:`.admission`): paired clients have their own pool of sessions;
unauthenticated ones share ``max_sessions`` with a cap per address, and when that pool
is full a new connection takes the place of the oldest one that has not yet sent
``server.version``. The TCP/TLS listener charges every byte of an unanswered request
(and of an unfinished line) to the client's address before it is parsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..config import ElectrumSection
from ..peers import AddressCounts, peer_address
from ..ratelog import RateLimitedLog
from .admission import Admission, FairShare
from .backend import ElectrumBackend
from .errors import EXCESSIVE_RESOURCE_USAGE, RPCError
from .framing import LineFramer, OversizeLineError, frame
from .handlers import Method, ServerInfo, handlers_for, scripthash_status
from .jsonrpc import encode, notification
from .session import ElectrumSession, MessageTransport, ServerCounters, SessionLimits

__all__ = ["ElectrumServer", "SessionManager", "StreamTransport"]

log = logging.getLogger(__name__)

_READ_SIZE = 65_536
#: StreamReader buffer: reading pauses past twice this, so a client the server is not
#: reading from (throttled, at its in-flight limit) holds little memory.
_STREAM_LIMIT = 16_384
_TLS_HANDSHAKE_TIMEOUT = 10.0  # a socket that never finishes TLS is not a session yet
#: asyncio gives every TLS connection a 256 KiB buffer from its first byte, so the
#: handshakes in progress are capped, per address and in all, before TLS starts.
_MAX_TLS_HANDSHAKES = 64
_MAX_TLS_HANDSHAKES_PER_ADDRESS = 8
#: A session that has not sent server.version for this long may be replaced by a newer
#: connection when the pool is full (a wallet sends it within a round trip).
_EVICTABLE_AFTER = 1.0


class SessionManager:
    """Every live session, the scripthash -> sessions index, counters and limits."""

    def __init__(self, backend: ElectrumBackend, *, info: ServerInfo | None = None,
                 limits: SessionLimits | None = None, max_sessions: int = 100,
                 share: FairShare | None = None) -> None:
        self._backend = backend
        self._info = info or ServerInfo()
        self._limits = limits or SessionLimits()
        self.admission = Admission(share or FairShare(max_sessions=max_sessions))
        self._counters = ServerCounters()
        self._refusals = RateLimitedLog(log, "refused connections and requests")
        self._sessions: set[ElectrumSession] = set()
        self._subscribers: dict[bytes, set[ElectrumSession]] = {}
        self._tables: dict[tuple[int, ...], Mapping[str, Method]] = {}
        self._pending_tip: tuple[int, bytes] | None = None
        self._pending_scripthashes: set[bytes] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._closed = False

    @classmethod
    def configured(cls, backend: ElectrumBackend, info: ServerInfo,
                   ec: ElectrumSection) -> SessionManager:
        """The manager the ``[electrum]`` settings describe."""
        share = FairShare(max_sessions=ec.max_sessions, paired_sessions=ec.paired_sessions,
                          per_address=ec.sessions_per_address,
                          address_inflight=ec.inflight_per_address_kib * 1024,
                          total_inflight=ec.inflight_total_kib * 1024)
        return cls(backend, info=info, share=share,
                   limits=SessionLimits(version_timeout=ec.version_timeout_s))

    # --- SessionHost -------------------------------------------------------------------

    @property
    def backend(self) -> ElectrumBackend:
        return self._backend

    @property
    def info(self) -> ServerInfo:
        return self._info

    @property
    def limits(self) -> SessionLimits:
        return self._limits

    @property
    def counters(self) -> ServerCounters:
        return self._counters

    def handlers(self, version: tuple[int, ...]) -> Mapping[str, Method]:
        table = self._tables.get(version)
        if table is None:
            table = self._tables[version] = handlers_for(version)
        return table

    def watch(self, session: ElectrumSession, scripthash: bytes) -> None:
        self._subscribers.setdefault(scripthash, set()).add(session)

    def unwatch(self, session: ElectrumSession, scripthash: bytes) -> None:
        sessions = self._subscribers.get(scripthash)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self._subscribers[scripthash]

    def detach(self, session: ElectrumSession) -> None:
        if session.ticket is not None:
            session.ticket.close()
        if session not in self._sessions:
            return
        self._sessions.discard(session)
        for scripthash in session.scripthashes():
            self.unwatch(session, scripthash)

    def log_refusal(self, msg: str, *args: object) -> None:
        self._refusals(msg, *args)

    def penalize(self, session: ElectrumSession) -> None:
        """Keep an abusive client's address out for a while, and close its other
        unpaired sessions: their next burst would cost as much as this one did."""
        ticket = session.ticket
        if ticket is None or ticket.paired:
            return
        self.admission.penalize(ticket.address)
        for other in list(self._sessions):
            if (other is not session and other.ticket is not None and not other.ticket.paired
                    and other.ticket.address == ticket.address):
                other.close()

    # --- sessions ----------------------------------------------------------------------

    @property
    def max_sessions(self) -> int:
        return self.admission.share.max_sessions

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    @property
    def sessions(self) -> list[ElectrumSession]:
        return list(self._sessions)

    def is_subscribed(self, scripthash: bytes) -> bool:
        """Whether some open session subscribes to it (keeps an ad-hoc watch alive)."""
        return scripthash in self._subscribers

    @property
    def subscribed_scripthashes(self) -> int:
        """Distinct scripthashes at least one session subscribes to."""
        return len(self._subscribers)

    def stats(self) -> dict[str, int]:
        """Counters plus current gauges, for the status bus."""
        c = self._counters
        return {
            "sessions": len(self._sessions),
            "paired_sessions": self.admission.paired,
            "sessions_total": c.sessions_total,
            "sessions_refused": c.sessions_refused,
            "requests_refused": c.requests_refused,
            "version_timeouts": c.version_timeouts,
            "bytes_in_flight": self.admission.inflight,
            "subscriptions": len(self._subscribers),
            "requests": c.requests,
            "errors": c.errors,
            "unknown_script_queries": c.unknown_script_queries,
            "adhoc_refused": c.adhoc_refused,
            "notifications": c.notifications,
        }

    def open_session(self, transport: MessageTransport, *, name: str = "", address: str = "",
                     paired: bool = False) -> ElectrumSession | None:
        """A new session, or None when its pool is full (caller closes).

        ``paired``: the client proved a whitelisted key (the Noise gate); it draws from
        the paired pool. ``address``: the peer's IP, for the per-address limits.
        """
        ticket = None if self._closed else self.admission.open(address, paired)
        if ticket is None and not self._closed and not paired and self._evict(address):
            ticket = self.admission.open(address, paired)
        if ticket is None:
            self._counters.sessions_refused += 1
            why = "closing" if self._closed else self.admission.refusal(address, paired)
            self.log_refusal("%s: refused, %s", name or "a client", why)
            return None
        session = ElectrumSession(self, transport, name=name, ticket=ticket)
        self._sessions.add(session)
        self._counters.sessions_total += 1
        return session

    def _evict(self, address: str) -> bool:
        """Close the oldest unpaired session that is still nobody (no server.version)
        to make room; from ``address`` itself when that address is at its cap."""
        same_address = (self.admission.address_sessions(address)
                        >= self.admission.share.per_address)
        cutoff = time.monotonic() - _EVICTABLE_AFTER
        candidates = [s for s in self._sessions
                      if s.protocol is None and s.ticket is not None and not s.ticket.paired
                      and s.opened_at < cutoff
                      and (not same_address or s.ticket.address == address)]
        if not candidates:
            return False
        oldest = min(candidates, key=lambda s: s.opened_at)
        self._counters.version_timeouts += 1
        oldest.close()
        return True

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Register with the backend and start the notifier and idle sweeper."""
        if self._started:
            return
        self._started = True
        self._backend.add_listeners(self.on_tip, self.on_scripthashes)
        self._tasks = [asyncio.create_task(self._notifier(), name="electrum-notifier"),
                       asyncio.create_task(self._sweeper(), name="electrum-idle-sweeper")]

    async def close(self) -> None:
        """Close every session; backend callbacks become no-ops."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        sessions = list(self._sessions)
        for session in sessions:
            session.close()
        await asyncio.gather(*self._tasks, *(s.wait_closed() for s in sessions),
                             return_exceptions=True)
        self._tasks = []

    # --- backend callbacks ----------------------------------------------------------------

    async def on_tip(self, height: int, header: bytes) -> None:
        if self._closed:
            return
        self._pending_tip = (height, header)
        self._wake.set()

    async def on_scripthashes(self, changed: set[bytes]) -> None:
        if self._closed:
            return
        subscribed = self._subscribers
        self._pending_scripthashes.update(sh for sh in changed if sh in subscribed)
        if self._pending_scripthashes:
            self._wake.set()

    async def _notifier(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._pending_tip is not None:
                self._send_tip(*self._pending_tip)
                self._pending_tip = None
            while self._pending_scripthashes:
                batch, self._pending_scripthashes = self._pending_scripthashes, set()
                for scripthash in batch:
                    await self._send_status(scripthash)
                    if self._pending_tip is not None:
                        # A new block outranks the remaining scripthashes of the last one.
                        self._send_tip(*self._pending_tip)
                        self._pending_tip = None

    def _send_tip(self, height: int, header: bytes) -> None:
        line = encode(notification("blockchain.headers.subscribe",
                                   [{"height": height, "hex": header.hex()}]))
        for session in list(self._sessions):
            session.notify_tip(height, header, line)

    async def _send_status(self, scripthash: bytes) -> None:
        if not self._subscribers.get(scripthash):
            return
        try:
            status = await scripthash_status(self._backend, scripthash)
        except Exception:
            log.exception("status of a changed scripthash failed")
            return
        line = encode(notification("blockchain.scripthash.subscribe",
                                   [scripthash.hex(), status]))
        for session in list(self._subscribers.get(scripthash, ())):
            session.notify_status(scripthash, status, line)

    async def _sweeper(self) -> None:
        idle = self._limits.idle_timeout
        while True:
            await asyncio.sleep(min(5.0, max(idle / 4, 0.01)))
            self.admission.maybe_trim()
            cutoff = time.monotonic() - idle
            for session in list(self._sessions):
                if session.last_activity < cutoff:
                    log.info("%s: closing idle session", session.name)
                    session.close()


class StreamTransport:
    """A :class:`MessageTransport` over an asyncio stream (TCP or TLS): one line each."""

    def __init__(self, writer: asyncio.StreamWriter, *, max_buffer: int) -> None:
        self._writer = writer
        self._max_buffer = max_buffer

    def send_line(self, line: bytes) -> None:
        transport = self._writer.transport
        if transport.is_closing():
            return
        self._writer.write(frame(line))
        if transport.get_write_buffer_size() > self._max_buffer:
            # The client is not reading what it asked for (or its notifications).
            log.info("dropping a client that does not read (%d bytes queued)",
                     transport.get_write_buffer_size())
            transport.abort()

    def close(self) -> None:
        self._writer.close()

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            await self._writer.drain()


class ElectrumServer:
    """TCP and TLS listeners feeding one :class:`SessionManager`."""

    def __init__(self, manager: SessionManager, *, host: str | Sequence[str] | None = None,
                 tcp_port: int | None = 50001, tls_port: int | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        if tls_port is not None and ssl_context is None:
            raise ValueError("a TLS port needs an ssl_context")
        self.manager = manager
        self._host = host
        self._ports = {"tcp": tcp_port, "tls": tls_port}
        self._ssl_context = ssl_context
        self._servers: dict[str, asyncio.Server] = {}
        self._connections: set[asyncio.Task[Any]] = set()
        self._handshaking = AddressCounts()

    async def start(self) -> None:
        await self.manager.start()
        for kind, port in self._ports.items():
            if port is None:
                continue

            async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            kind: str = kind) -> None:
                await self._serve(reader, writer, kind)

            # TLS is started per connection (_start_tls), once it is within the limits.
            self._servers[kind] = await asyncio.start_server(
                serve, self._host, port, reuse_address=True, limit=_STREAM_LIMIT)
            log.info("serving Electrum %s on port %d", kind.upper(), self.port(kind))

    def port(self, kind: str) -> int:
        """The bound port of the "tcp" or "tls" listener (useful with port 0)."""
        port: int = self._servers[kind].sockets[0].getsockname()[1]
        return port

    @property
    def tcp_port(self) -> int:
        return self.port("tcp")

    @property
    def tls_port(self) -> int:
        return self.port("tls")

    async def close(self) -> None:
        """Stop accepting, close every session, wait for connections to wind down."""
        for server in self._servers.values():
            server.close()
        await self.manager.close()
        if self._connections:
            await asyncio.wait(self._connections, timeout=5.0)
        for server in self._servers.values():
            await server.wait_closed()
        self._servers.clear()

    async def __aenter__(self) -> ElectrumServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     kind: str) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            if kind == "tls" and not await self._start_tls(writer):
                return
            await self._serve_connection(reader, writer, kind)
        finally:
            if task is not None:
                self._connections.discard(task)

    async def _start_tls(self, writer: asyncio.StreamWriter) -> bool:
        """The TLS handshake, if this address and the server have room for one."""
        address = peer_address(writer.get_extra_info("peername"))
        if not self._handshaking.acquire(address, _MAX_TLS_HANDSHAKES_PER_ADDRESS,
                                         _MAX_TLS_HANDSHAKES):
            self.manager.counters.sessions_refused += 1
            self.manager.log_refusal("tls %s: refused, too many TLS handshakes at once",
                                     address)
            writer.transport.abort()
            return False
        try:
            assert self._ssl_context is not None
            await writer.start_tls(self._ssl_context,
                                   ssl_handshake_timeout=_TLS_HANDSHAKE_TIMEOUT)
        except (ConnectionError, OSError, ssl.SSLError, TimeoutError):
            writer.transport.abort()  # TimeoutError is an OSError, listed for clarity
            return False
        finally:
            self._handshaking.release(address)
        return True

    async def _serve_connection(self, reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter, kind: str) -> None:
        limits = self.manager.limits
        peer = writer.get_extra_info("peername")
        address = peer_address(peer)
        name = f"{kind} {peer[0]}:{peer[1]}" if isinstance(peer, tuple) else kind
        transport = StreamTransport(writer, max_buffer=limits.max_send_buffer)
        session = self.manager.open_session(transport, name=name, address=address)
        if session is None:
            await _close_writer(writer)
            return
        ticket = session.ticket
        assert ticket is not None
        framer = LineFramer(limits.max_line)
        partial = 0  # bytes of the unfinished line charged to the ticket
        line_deadline: float | None = None
        loop = asyncio.get_running_loop()
        try:
            while not session.closed:
                try:
                    async with asyncio.timeout_at(line_deadline):
                        data = await reader.read(_READ_SIZE)
                except TimeoutError:
                    session.refuse(RPCError.invalid_request(
                        f"a message unfinished after {limits.line_timeout:g} s"))
                    break
                if not data:
                    break
                try:
                    lines = framer.feed(data)
                except OversizeLineError as exc:
                    ticket.release(partial)
                    partial = 0
                    for line in exc.complete:
                        await session.handle_message(line)
                    await session.message_too_large(exc.max_size)
                    break
                # Charge what was read before anything is parsed; the session gives a
                # line's bytes back once it has answered it.
                need = framer.buffered + sum(map(len, lines))
                if need > partial and not ticket.hold(need - partial):
                    session.refuse(RPCError(EXCESSIVE_RESOURCE_USAGE,
                                            "too many request bytes in flight from your address"))
                    break
                ticket.release(partial - need)
                partial = framer.buffered
                if not partial:
                    line_deadline = None
                elif line_deadline is None or lines:
                    line_deadline = loop.time() + limits.line_timeout
                for line in lines:
                    await session.handle_message(line)
                    if session.closed:
                        break
                del lines
        except (ConnectionError, OSError, ssl.SSLError):
            pass  # the client went away; nothing to answer
        finally:
            session.close()
            await session.wait_closed()
            await _close_writer(writer)


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError, ssl.SSLError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 5.0)

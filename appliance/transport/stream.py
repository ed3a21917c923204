"""The BOLT #8 transport over asyncio streams: handshakes with a deadline, then :class:`NoiseStream`.

Contract: whatever the peer or the network does, these functions and ``NoiseStream``'s
methods fail only with one of :data:`STREAM_ERRORS`, a :class:`~.noise.NoiseError` (the
peer broke the protocol: bad act, bad MAC, truncated frame) or a :class:`TransportError`
(timeout, closed connection, refused peer). Before such an error is raised the
connection is aborted, so nothing is left waiting on it; every connection has its own
deadlines and state, so one bad client never holds up another.

Server side::

    server = await start_server(handler, "0.0.0.0", 9735, node_key,
                                authorize=lambda pub: pub in paired)
    ...
    server.close(); await server.wait_closed()   # also ends live connections

or, inside an existing ``asyncio.start_server`` callback, ``await accept_handshake(...)``.
Client side: ``stream = await connect(host, port, my_key, box_pub)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType

from ..peers import AddressCounts, peer_address
from ..ratelog import RateLimitedLog
from .noise import (
    ACT_ONE_SIZE,
    ACT_THREE_SIZE,
    ACT_TWO_SIZE,
    HEADER_SIZE,
    MAC_SIZE,
    MAX_MESSAGE_SIZE,
    ActLengthError,
    FrameLengthError,
    Initiator,
    Keypair,
    NoiseError,
    NoiseSession,
    Responder,
    SecretKey,
)

__all__ = [
    "DEFAULT_FRAME_TIMEOUT",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_WRITE_TIMEOUT",
    "STREAM_ERRORS",
    "ConnectFailedError",
    "ConnectionClosedError",
    "HandshakeTimeoutError",
    "NoiseListener",
    "NoiseServer",
    "NoiseStream",
    "Opener",
    "TransportError",
    "TransportTimeoutError",
    "TruncatedFrameError",
    "UnauthorizedPeerError",
    "accept_handshake",
    "connect",
    "pipe",
    "start_server",
]

log = logging.getLogger(__name__)

DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: Once a frame's header has arrived its body must follow within this (a stalled half
#: frame would otherwise hold the connection and up to 64 KiB of buffer forever).
DEFAULT_FRAME_TIMEOUT = 30.0
#: A peer that stops reading makes ``send`` fail after this instead of blocking.
DEFAULT_WRITE_TIMEOUT = 30.0
#: Handshakes in progress at once, from one address and in all. Until act three a
#: client is nobody; past these a new connection is closed unanswered, so a flood of
#: half-open handshakes costs the server a bounded number of sockets and tasks.
DEFAULT_MAX_HANDSHAKES_PER_ADDRESS = 8
DEFAULT_MAX_HANDSHAKES = 128


class TransportError(Exception):
    """The connection failed for a reason other than a protocol violation."""


class TransportTimeoutError(TransportError):
    """Something did not arrive (or could not be sent) in time."""


class HandshakeTimeoutError(TransportTimeoutError):
    """The three acts were not done within the handshake timeout."""


class ConnectionClosedError(TransportError):
    """The peer closed or reset the connection (between frames), or it was closed here."""


class ConnectFailedError(TransportError):
    """No TCP connection could be made."""


class UnauthorizedPeerError(TransportError):
    """The handshake succeeded but ``authorize`` refused the peer's static key."""

    def __init__(self, remote_static: bytes) -> None:
        self.remote_static = remote_static
        super().__init__(f"peer {remote_static.hex()} is not authorized")


class TruncatedFrameError(FrameLengthError):
    """The connection ended inside a frame."""


#: Everything a peer can make these functions raise; catch this in a server loop.
STREAM_ERRORS: tuple[type[Exception], ...] = (NoiseError, TransportError)


def _abort(writer: asyncio.StreamWriter) -> None:
    # abort, not close: a misbehaving peer gets no flush and no further wait.
    writer.transport.abort()


async def _read_act(reader: asyncio.StreamReader, size: int, act: int) -> bytes:
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise ActLengthError(act, f"connection closed after {len(exc.partial)} of {size} bytes") from None


async def _handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     steps: Callable[[], Awaitable[NoiseSession]], deadline: float, timeout: float,
                     frame_timeout: float | None, write_timeout: float | None) -> NoiseStream:
    try:
        async with asyncio.timeout_at(deadline):
            session = await steps()
    except TimeoutError:  # before OSError: TimeoutError is one
        _abort(writer)
        raise HandshakeTimeoutError(f"handshake not done within {timeout:g} s") from None
    except OSError as exc:
        _abort(writer)
        raise ConnectionClosedError(f"connection lost during the handshake: {exc}") from exc
    except BaseException:
        _abort(writer)
        raise
    return NoiseStream(reader, writer, session, frame_timeout=frame_timeout, write_timeout=write_timeout)


async def accept_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, local_key: SecretKey,
                           timeout: float = DEFAULT_HANDSHAKE_TIMEOUT, *,
                           authorize: Callable[[bytes], bool] | None = None,
                           max_message_size: int = MAX_MESSAGE_SIZE,
                           frame_timeout: float | None = DEFAULT_FRAME_TIMEOUT,
                           write_timeout: float | None = DEFAULT_WRITE_TIMEOUT) -> NoiseStream:
    """Run the responder's side on an accepted connection.

    ``authorize(remote_static)`` (optional) decides on the initiator's static key, which
    is only known after act three; a refusal raises :class:`UnauthorizedPeerError`. The
    peer's key is ``stream.remote_static`` either way.
    """
    responder = Responder(Keypair.of(local_key), max_message_size=max_message_size)

    async def steps() -> NoiseSession:
        writer.write(responder.read_act_one(await _read_act(reader, ACT_ONE_SIZE, 1)))
        await writer.drain()
        return responder.read_act_three(await _read_act(reader, ACT_THREE_SIZE, 3))

    deadline = asyncio.get_running_loop().time() + timeout
    stream = await _handshake(reader, writer, steps, deadline, timeout, frame_timeout, write_timeout)
    try:
        allowed = authorize is None or authorize(stream.remote_static)
    except BaseException:
        stream.abort()
        raise
    if not allowed:
        stream.abort()
        raise UnauthorizedPeerError(stream.remote_static)
    return stream


async def _initiate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, initiator: Initiator,
                    deadline: float, timeout: float, frame_timeout: float | None,
                    write_timeout: float | None) -> NoiseStream:
    async def steps() -> NoiseSession:
        writer.write(initiator.act_one())
        await writer.drain()
        writer.write(initiator.read_act_two(await _read_act(reader, ACT_TWO_SIZE, 2)))
        await writer.drain()
        return initiator.session

    return await _handshake(reader, writer, steps, deadline, timeout, frame_timeout, write_timeout)


#: Opens a byte stream to (host, port): asyncio.open_connection, or one through a proxy.
Opener = Callable[[str, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def connect(host: str, port: int, local_key: SecretKey, remote_pub: bytes,
                  timeout: float = DEFAULT_HANDSHAKE_TIMEOUT, *, max_message_size: int = MAX_MESSAGE_SIZE,
                  frame_timeout: float | None = DEFAULT_FRAME_TIMEOUT,
                  write_timeout: float | None = DEFAULT_WRITE_TIMEOUT,
                  open_connection: Opener | None = None) -> NoiseStream:
    """Connect to ``host:port`` and authenticate as ``local_key`` to the node ``remote_pub``.

    ``timeout`` covers the TCP connection and the handshake together; ``open_connection``
    replaces the direct TCP connection (a SOCKS proxy such as Tor: the Noise handshake on
    top still authenticates the box by its key, whatever carries the bytes). A wrong
    ``remote_pub`` shows as the responder closing the connection after act one, which
    surfaces as ``ActLengthError`` (``ACT2_READ_FAILED``). A ``remote_pub`` that is not
    a compressed secp256k1 key raises ``ValueError`` before anything is sent.
    """
    initiator = Initiator(Keypair.of(local_key), remote_pub, max_message_size=max_message_size)
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        async with asyncio.timeout_at(deadline):
            reader, writer = await (open_connection or asyncio.open_connection)(host, port)
    except TimeoutError:
        raise HandshakeTimeoutError(f"no connection to {host}:{port} within {timeout:g} s") from None
    except OSError as exc:
        raise ConnectFailedError(f"cannot connect to {host}:{port}: {exc}") from exc
    return await _initiate(reader, writer, initiator, deadline, timeout, frame_timeout, write_timeout)


class NoiseStream:
    """An authenticated, encrypted message stream (one BOLT 8 message per ``send``/``recv``).

    ``send`` may run concurrently with ``recv``; concurrent ``recv`` calls queue up.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, session: NoiseSession, *,
                 frame_timeout: float | None = DEFAULT_FRAME_TIMEOUT,
                 write_timeout: float | None = DEFAULT_WRITE_TIMEOUT) -> None:
        self._reader = reader
        self._writer = writer
        self._session = session
        self._frame_timeout = frame_timeout
        self._write_timeout = write_timeout
        self._recv_lock = asyncio.Lock()
        self._closed = False

    @property
    def session(self) -> NoiseSession:
        return self._session

    @property
    def remote_static(self) -> bytes:
        """The peer's static public key (33 bytes): on a server, who this client is."""
        return self._session.remote_static

    @property
    def handshake_hash(self) -> bytes:
        return self._session.handshake_hash

    @property
    def peername(self) -> object:
        return self._writer.get_extra_info("peername")

    @property
    def closed(self) -> bool:
        return self._closed or self._writer.transport.is_closing()

    def _check_open(self) -> None:
        if self.closed:
            raise ConnectionClosedError("the stream is closed")

    def write(self, message: bytes) -> None:
        """Queue one message without waiting (pair with :meth:`drain` for backpressure)."""
        self._check_open()
        # Encrypting and queueing with no await between keeps frames in nonce order.
        self._writer.write(self._session.encrypt(message))

    async def drain(self) -> None:
        """Wait until the send buffer is low; a peer that does not read fails after ``write_timeout``."""
        try:
            async with asyncio.timeout(self._write_timeout):
                await self._writer.drain()
        except TimeoutError:
            self.abort()
            raise TransportTimeoutError(f"peer did not read for {self._write_timeout:g} s") from None
        except OSError as exc:  # reset, broken pipe
            self.abort()
            raise ConnectionClosedError(f"connection lost: {exc}") from exc

    async def send(self, message: bytes) -> None:
        """Send one message (at most 65535 bytes, else ``MessageTooLargeError``, a ValueError)."""
        self.write(message)
        await self.drain()

    async def _readexactly(self, n: int, *, at_boundary: bool) -> bytes:
        try:
            return await self._reader.readexactly(n)
        except asyncio.IncompleteReadError as exc:
            if at_boundary and not exc.partial:
                raise ConnectionClosedError("peer closed the connection") from None
            raise TruncatedFrameError(
                f"connection closed inside a frame ({len(exc.partial)} of {n} bytes)") from None
        except OSError as exc:
            raise ConnectionClosedError(f"connection lost: {exc}") from exc

    async def recv(self, timeout: float | None = None) -> bytes:
        """The next message. ``timeout`` bounds the wait for it to start.

        A ``TransportTimeoutError`` from ``timeout`` (or a cancellation) while no frame has
        started leaves the stream usable: nothing was consumed. Every other failure
        aborts the connection.
        """
        async with self._recv_lock:
            self._check_open()
            try:
                async with asyncio.timeout(timeout):
                    header = await self._readexactly(HEADER_SIZE, at_boundary=True)
            except TimeoutError:
                # StreamReader keeps its buffer when readexactly is cancelled.
                raise TransportTimeoutError(f"no message within {timeout:g} s") from None
            except asyncio.CancelledError:
                raise
            except BaseException:
                self.abort()
                raise
            try:
                length = self._session.decrypt_length(header)
                async with asyncio.timeout(self._frame_timeout):
                    body = await self._readexactly(length + MAC_SIZE, at_boundary=False)
                return self._session.decrypt_body(body)
            except TimeoutError:
                self.abort()
                raise TransportTimeoutError(
                    f"frame body not received within {self._frame_timeout:g} s") from None
            except BaseException:
                self.abort()  # half a frame is gone: the stream cannot resynchronise
                raise

    def close(self) -> None:
        """Flush what is queued, then close. Idempotent."""
        self._closed = True
        self._writer.close()

    def abort(self) -> None:
        """Drop the connection now, discarding anything queued. Idempotent."""
        self._closed = True
        self._writer.transport.abort()

    async def wait_closed(self) -> None:
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def __aenter__(self) -> NoiseStream:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()
        await self.wait_closed()


class NoiseServer:
    """A listener made by :func:`start_server`; closing it also ends every live connection."""

    def __init__(self, handler: Callable[[NoiseStream], Awaitable[None]], local_key: SecretKey, *,
                 handshake_timeout: float, authorize: Callable[[bytes], bool] | None, max_message_size: int,
                 frame_timeout: float | None, write_timeout: float | None,
                 max_handshakes: int = DEFAULT_MAX_HANDSHAKES,
                 max_handshakes_per_address: int = DEFAULT_MAX_HANDSHAKES_PER_ADDRESS) -> None:
        self._handler = handler
        self._key = Keypair.of(local_key)
        self._handshake_timeout = handshake_timeout
        self._authorize = authorize
        self._max_message_size = max_message_size
        self._frame_timeout = frame_timeout
        self._write_timeout = write_timeout
        #: handshakes that failed (garbage, time-out, bad key, replayed act one, or
        #: refused unstarted past the limits): counted so a scan or an attack shows on
        #: the status page; the server keeps serving
        self.failed_handshakes = 0
        self._max_handshakes = max_handshakes
        self._max_per_address = max_handshakes_per_address
        self._handshaking = AddressCounts()
        self._failures = RateLimitedLog(log, "failed or refused Noise handshakes")
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def listen(self, host: str | Sequence[str] | None, port: int) -> None:
        self._server = await asyncio.start_server(self._on_connect, host, port, reuse_address=True)

    @property
    def port(self) -> int:
        """The bound port of the first socket (useful with port 0)."""
        if self._server is None:
            raise RuntimeError("not listening")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def connections(self) -> int:
        """Connections being served (handshaking or in the handler)."""
        return len(self._tasks)

    def close(self) -> None:
        """Stop listening and cancel every connection's task (each aborts its socket)."""
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername")
        address = peer_address(peer)
        if (self._handshaking.total >= self._max_handshakes
                or not self._handshaking.acquire(address, self._max_per_address)):
            self.failed_handshakes += 1
            self._failures("noise peer %s refused: too many handshakes in progress", peer)
            writer.transport.abort()
            return
        self._tasks.add(task)
        stream: NoiseStream | None = None
        try:
            try:
                stream = await accept_handshake(
                    reader, writer, self._key, self._handshake_timeout, authorize=self._authorize,
                    max_message_size=self._max_message_size, frame_timeout=self._frame_timeout,
                    write_timeout=self._write_timeout)
            finally:
                self._handshaking.release(address)
            await self._handler(stream)
        except STREAM_ERRORS as exc:
            if stream is None:
                self.failed_handshakes += 1
                self._failures("noise peer %s dropped: %s", peer, exc)
            else:  # got in, then broke the protocol or timed out
                self._failures("noise peer %s (%s) dropped: %s", stream.remote_static.hex(),
                               peer, exc)
        except asyncio.CancelledError:
            # Server shutdown. Returning (not re-raising) because Python 3.11's asyncio
            # logs a cancelled connection callback as an error; nothing awaits this task.
            writer.transport.abort()
        except Exception:
            log.exception("noise handler failed for %s", peer)
        finally:
            self._tasks.discard(task)
            if not writer.transport.is_closing():
                writer.close()


async def start_server(handler: Callable[[NoiseStream], Awaitable[None]], host: str | Sequence[str] | None,
                       port: int, local_key: SecretKey, *,
                       handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
                       authorize: Callable[[bytes], bool] | None = None,
                       max_message_size: int = MAX_MESSAGE_SIZE,
                       frame_timeout: float | None = DEFAULT_FRAME_TIMEOUT,
                       write_timeout: float | None = DEFAULT_WRITE_TIMEOUT,
                       max_handshakes: int = DEFAULT_MAX_HANDSHAKES,
                       max_handshakes_per_address: int = DEFAULT_MAX_HANDSHAKES_PER_ADDRESS,
                       ) -> NoiseServer:
    """Listen; run ``handler(stream)`` for each client that completes the handshake.

    Each connection is its own task with its own deadlines. A failed handshake is
    dropped and counted (``failed_handshakes``) and logged at a bounded rate (a flood
    must not rewrite the log files); the stream is closed when ``handler`` returns or
    raises.
    """
    server = NoiseServer(handler, local_key, handshake_timeout=handshake_timeout, authorize=authorize,
                         max_message_size=max_message_size, frame_timeout=frame_timeout,
                         write_timeout=write_timeout, max_handshakes=max_handshakes,
                         max_handshakes_per_address=max_handshakes_per_address)
    await server.listen(host, port)
    return server


async def pipe(stream: NoiseStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Carry bytes both ways between ``stream`` and a plain connection until either side
    ends (a tunnel: ``appliance-client tunnel``, the tower's relay). Each Noise message is
    whatever one read returned; framing inside (Electrum lines, HTTP) passes through
    unchanged. Closes ``writer``; ``stream`` stays with its owner."""

    async def to_noise() -> None:
        while data := await reader.read(MAX_MESSAGE_SIZE):
            await stream.send(data)

    async def from_noise() -> None:
        while True:
            writer.write(await stream.recv())
            await writer.drain()

    tasks = [asyncio.create_task(to_noise()), asyncio.create_task(from_noise())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        # Either side ending (EOF, a closed or broken stream) just ends the tunnel.
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()
        with contextlib.suppress(*STREAM_ERRORS, ConnectionError, OSError):
            await writer.wait_closed()


class NoiseListener:
    """For a class that runs one :class:`NoiseServer` in ``self.server`` (set by its
    ``start``): the bound port and an idempotent close."""

    server: NoiseServer | None

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

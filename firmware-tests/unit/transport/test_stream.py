"""BOLT #8 transport over real asyncio sockets on 127.0.0.1: handshakes, messages, misbehaviour."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import pytest

from appliance.transport.noise import (
    ACT_ONE_SIZE,
    ACT_TWO_SIZE,
    HEADER_SIZE,
    MAX_MESSAGE_SIZE,
    ActLengthError,
    BadPublicKeyError,
    BadTagError,
    BadVersionError,
    DecryptionError,
    FrameTooLargeError,
    HandshakeError,
    Initiator,
    Keypair,
    MessageTooLargeError,
)
from appliance.transport.stream import (
    STREAM_ERRORS,
    ConnectFailedError,
    ConnectionClosedError,
    HandshakeTimeoutError,
    NoiseStream,
    TransportTimeoutError,
    TruncatedFrameError,
    UnauthorizedPeerError,
    accept_handshake,
    connect,
    start_server,
)

__all__: list[str] = []

T = TypeVar("T")
HOST = "127.0.0.1"
BOX = Keypair(b"\x21" * 32)
PHONE = Keypair(b"\x11" * 32)


def run(coro: Awaitable[T], limit: float = 60.0) -> T:
    """Run a test coroutine; a hang fails the test instead of blocking the suite."""
    async def bounded() -> T:
        return await asyncio.wait_for(coro, limit)
    return asyncio.run(bounded())


class EchoServer:
    """accept_handshake on every connection; records each outcome; echoes messages back."""

    def __init__(self, **accept_kwargs: Any) -> None:
        self.kwargs = accept_kwargs
        self.outcomes: asyncio.Queue[NoiseStream | BaseException] = asyncio.Queue()
        self.ends: asyncio.Queue[BaseException] = asyncio.Queue()  # how each echo loop ended
        self.greeting: bytes | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            stream = await accept_handshake(reader, writer, BOX, **self.kwargs)
        except BaseException as exc:
            assert writer.transport.is_closing(), "a failed handshake must drop the connection"
            await self.outcomes.put(exc)
            return
        await self.outcomes.put(stream)
        try:
            if self.greeting is not None:
                await stream.send(self.greeting)
            while True:
                await stream.send(await stream.recv())
        except BaseException as exc:
            await self.ends.put(exc)
            if not isinstance(exc, STREAM_ERRORS):
                raise
        finally:
            stream.close()
            await stream.wait_closed()

    async def __aenter__(self) -> EchoServer:
        self._server = await asyncio.start_server(self._on_connect, HOST, 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def outcome(self, timeout: float = 10.0) -> NoiseStream | BaseException:
        return await asyncio.wait_for(self.outcomes.get(), timeout)

    async def end(self, timeout: float = 10.0) -> BaseException:
        return await asyncio.wait_for(self.ends.get(), timeout)


@contextlib.asynccontextmanager
async def raw(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        yield reader, writer
    finally:
        writer.transport.abort()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def eof_within(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sent until it dropped the connection."""
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    except ConnectionResetError:
        return b""


async def raw_handshake(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, NoiseStream]:
    """A handshaken client, with the raw streams under it (to send bytes past the framing)."""
    stream = await connect(HOST, port, PHONE, BOX.public, 5.0)
    return stream._reader, stream._writer, stream


# --- the good path ----------------------------------------------------------------------------------
def test_handshake_and_messages_both_ways() -> None:
    async def main() -> None:
        async with EchoServer() as server:
            server.greeting = b"hello from the box"
            async with await connect(HOST, server.port, PHONE, BOX.public) as client:
                box_side = await server.outcome()
                assert isinstance(box_side, NoiseStream)
                assert box_side.remote_static == PHONE.public  # what the whitelist checks
                assert client.remote_static == BOX.public
                assert client.handshake_hash == box_side.handshake_hash
                assert await client.recv() == b"hello from the box"
                for size in (0, 1, 100, 16_384, MAX_MESSAGE_SIZE):
                    msg = os.urandom(size)
                    await client.send(msg)
                    assert await client.recv() == msg
                # 1100 round trips: two key rotations in each direction.
                for i in range(1100):
                    await client.send(i.to_bytes(4, "big"))
                for i in range(1100):
                    assert await client.recv() == i.to_bytes(4, "big")
                with pytest.raises(MessageTooLargeError):
                    await client.send(bytes(MAX_MESSAGE_SIZE + 1))
                await client.send(b"still usable")
                assert await client.recv() == b"still usable"
            assert isinstance(await server.end(), ConnectionClosedError)  # clean EOF between frames
    run(main())


def test_concurrent_sends_keep_their_order() -> None:
    async def main() -> None:
        async with EchoServer() as server, await connect(HOST, server.port, PHONE, BOX.public) as client:
            batch = [os.urandom(60_000) for _ in range(100)]  # enough to make drain() wait

            async def recv_all() -> list[bytes]:
                return [await client.recv(timeout=10) for _ in batch]

            echoed, *_ = await asyncio.gather(recv_all(), *(client.send(m) for m in batch))
            assert echoed == batch
    run(main())


def test_recv_timeout_leaves_the_stream_usable() -> None:
    async def main() -> None:
        async with EchoServer() as server, await connect(HOST, server.port, PHONE, BOX.public) as client:
            with pytest.raises(TransportTimeoutError):
                await client.recv(timeout=0.05)
            assert not client.closed
            await client.send(b"late")
            assert await client.recv(timeout=5) == b"late"
            client.close()
            with pytest.raises(ConnectionClosedError):
                await client.send(b"after close")
            with pytest.raises(ConnectionClosedError):
                await client.recv()
    run(main())


def test_start_server_runs_handler_and_closes() -> None:
    async def main() -> None:
        seen: list[bytes] = []

        async def handler(stream: NoiseStream) -> None:
            seen.append(stream.remote_static)
            await stream.send(b"reply:" + await stream.recv())

        server = await start_server(handler, HOST, 0, BOX, handshake_timeout=2.0)
        port = server.port
        try:
            async with await connect(HOST, port, PHONE, BOX.public) as client:
                await client.send(b"x")
                assert await client.recv() == b"reply:x"
                with pytest.raises(ConnectionClosedError):  # handler returned: stream closed
                    await client.recv()
            assert seen == [PHONE.public]
            # A failed handshake is logged and dropped, not raised into the server.
            async with raw(port) as (reader, writer):
                writer.write(b"\x01" * ACT_ONE_SIZE)
                assert await eof_within(reader, 5) == b""
        finally:
            server.close()
            await server.wait_closed()
    run(main())


def test_closing_the_server_ends_live_connections() -> None:
    async def main() -> None:
        async def handler(stream: NoiseStream) -> None:
            await stream.recv()  # waits for ever

        server = await start_server(handler, HOST, 0, BOX)
        async with raw(server.port) as (silent_reader, _), \
                await connect(HOST, server.port, PHONE, BOX.public) as client:
            while server.connections < 2:
                await asyncio.sleep(0.01)
            server.close()
            await server.wait_closed()
            assert server.connections == 0
            with pytest.raises(ConnectionClosedError):
                await client.recv(timeout=5)
            assert await eof_within(silent_reader, 5) == b""
    run(main())


# --- handshake failures -----------------------------------------------------------------------------
def test_silent_client_times_out() -> None:
    async def main() -> None:
        async with EchoServer(timeout=0.3) as server, raw(server.port) as (reader, _):
            assert isinstance(await server.outcome(), HandshakeTimeoutError)
            assert await eof_within(reader, 5) == b""
    run(main())


def test_client_times_out_on_a_silent_server() -> None:
    async def main() -> None:
        held: list[asyncio.StreamWriter] = []

        async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            held.append(writer)

        server = await asyncio.start_server(mute, HOST, 0)
        try:
            port = server.sockets[0].getsockname()[1]
            with pytest.raises(HandshakeTimeoutError):
                await connect(HOST, port, PHONE, BOX.public, timeout=0.3)
        finally:
            for w in held:
                w.close()
            server.close()
            await server.wait_closed()
    run(main())


@pytest.mark.parametrize(("garbage", "error"), [
    (b"GET / HTTP/1.1\r\nHost: hearth.local\r\n\r\n" + b"x" * 20, BadVersionError),
    (b"\x00\x05" + b"\x11" * 48, BadPublicKeyError),
    (b"\x00" + PHONE.public + b"\x00" * 16, BadTagError),
    (os.urandom(1 << 20), HandshakeError),
    (b"\x00\x02\x03", ActLengthError),  # then EOF
])
def test_garbage_instead_of_act_one(garbage: bytes, error: type[Exception]) -> None:
    async def main() -> None:
        async with EchoServer(timeout=5) as server, raw(server.port) as (reader, writer):
            writer.write(garbage)
            if len(garbage) < ACT_ONE_SIZE:
                writer.write_eof()
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            assert isinstance(await server.outcome(), error)
            assert await eof_within(reader, 5) == b""  # no act two, nothing at all
    run(main())


def test_garbage_act_three() -> None:
    async def main() -> None:
        async with EchoServer(timeout=5) as server, raw(server.port) as (reader, writer):
            ini = Initiator(PHONE, BOX.public)
            writer.write(ini.act_one())
            ini.read_act_two(await reader.readexactly(ACT_TWO_SIZE))
            writer.write(os.urandom(66))
            outcome = await server.outcome()
            assert isinstance(outcome, HandshakeError) and outcome.act == 3
            assert await eof_within(reader, 5) == b""
    run(main())


def test_replayed_act_one_from_a_previous_session() -> None:
    async def main() -> None:
        async with EchoServer(timeout=1.0) as server:
            # A genuine session, recorded by an eavesdropper.
            async with raw(server.port) as (reader, writer):
                ini = Initiator(PHONE, BOX.public)
                act1 = ini.act_one()
                writer.write(act1)
                act2 = await reader.readexactly(ACT_TWO_SIZE)
                act3 = ini.read_act_two(act2)
                writer.write(act3)
                assert isinstance(await server.outcome(), NoiseStream)
            # Replay: act one is accepted (it carries no freshness), act two is new...
            async with raw(server.port) as (reader, writer):
                writer.write(act1)
                assert await reader.readexactly(ACT_TWO_SIZE) != act2
                writer.write(act3)  # ...so the recorded act three cannot match it.
                outcome = await server.outcome()
                assert isinstance(outcome, BadTagError) and outcome.code == "ACT3_BAD_CIPHERTEXT"
                assert await eof_within(reader, 5) == b""
            # Replaying act one alone just runs into the handshake timeout.
            async with raw(server.port) as (reader, writer):
                writer.write(act1)
                await reader.readexactly(ACT_TWO_SIZE)
                assert isinstance(await server.outcome(), HandshakeTimeoutError)
                assert await eof_within(reader, 5) == b""
    run(main())


def test_wrong_box_key_and_unauthorized_phone() -> None:
    async def main() -> None:
        async with EchoServer(authorize=lambda pub: pub == PHONE.public) as server:
            with pytest.raises(ActLengthError) as info:  # the box hangs up after act one
                await connect(HOST, server.port, PHONE, Keypair.generate().public)
            assert info.value.code == "ACT2_READ_FAILED"
            assert isinstance(await server.outcome(), BadTagError)

            stranger = Keypair.generate()
            async with await connect(HOST, server.port, stranger, BOX.public) as client:
                refused = await server.outcome()
                assert isinstance(refused, UnauthorizedPeerError)
                assert refused.remote_static == stranger.public
                with pytest.raises(ConnectionClosedError):
                    await client.recv()

            async with await connect(HOST, server.port, PHONE, BOX.public) as client:
                assert isinstance(await server.outcome(), NoiseStream)
                await client.send(b"ok")
                assert await client.recv() == b"ok"
    run(main())


def test_connect_refused() -> None:
    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: None, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        with pytest.raises(ConnectFailedError):
            await connect(HOST, port, PHONE, BOX.public, timeout=5)
    run(main())


# --- transport failures -----------------------------------------------------------------------------
def test_oversize_length_header() -> None:
    async def main() -> None:
        async with EchoServer(max_message_size=1000) as server:
            reader, writer, client = await raw_handshake(server.port)
            async with client:
                await client.send(bytes(1000))
                assert await client.recv() == bytes(1000)
                await client.send(bytes(1001))  # legal for BOLT 8, over this server's limit
                end = await server.end()
                assert isinstance(end, FrameTooLargeError) and end.length == 1001
                with pytest.raises(ConnectionClosedError):
                    await client.recv()
    run(main())


def test_forged_length_header() -> None:
    async def main() -> None:
        async with EchoServer() as server:
            reader, writer, client = await raw_handshake(server.port)
            async with client:
                # 0xffff with a made-up MAC: refused at the header, nothing more is read.
                writer.write(b"\xff\xff" + os.urandom(16))
                assert isinstance(await server.end(), DecryptionError)
                with pytest.raises(ConnectionClosedError):
                    await client.recv()
    run(main())


@pytest.mark.parametrize("cut", [1, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 5, HEADER_SIZE + 99])
def test_truncated_frame_then_eof(cut: int) -> None:
    async def main() -> None:
        async with EchoServer() as server:
            reader, writer, client = await raw_handshake(server.port)
            async with client:
                frame = client.session.encrypt(bytes(100))
                writer.write(frame[:cut])
                writer.write_eof()
                end = await server.end()
                assert isinstance(end, TruncatedFrameError)
    run(main())


def test_truncated_frame_without_eof_hits_the_frame_timeout() -> None:
    async def main() -> None:
        async with EchoServer(frame_timeout=0.3) as server:
            reader, writer, client = await raw_handshake(server.port)
            async with client:
                frame = client.session.encrypt(bytes(100))
                writer.write(frame[:HEADER_SIZE + 10])
                end = await server.end()
                assert isinstance(end, TransportTimeoutError)
                assert await eof_within(reader, 5) == b""
    run(main())


def test_peer_that_does_not_read_fails_send() -> None:
    async def main() -> None:
        gate = asyncio.Event()

        async def handler(stream: NoiseStream) -> None:
            await gate.wait()  # never reads

        server = await start_server(handler, HOST, 0, BOX)
        port = server.port
        try:
            client = await connect(HOST, port, PHONE, BOX.public, write_timeout=0.3)
            with pytest.raises(TransportTimeoutError):
                for _ in range(5000):  # loopback buffers hold a few MB at most
                    await client.send(bytes(MAX_MESSAGE_SIZE))
            assert client.closed
            await client.wait_closed()
        finally:
            gate.set()
            server.close()
            await server.wait_closed()
    run(main())


# --- independence -----------------------------------------------------------------------------------
def test_many_concurrent_clients_with_misbehaving_ones(timeout_factor: float) -> None:
    handshake_timeout = 3.0 * timeout_factor

    async def good(port: int, n: int) -> None:
        me = Keypair.generate()
        async with await connect(HOST, port, me, BOX.public) as client:
            for i in range(20):
                msg = f"{n}:{i}".encode() * (i + 1)
                await client.send(msg)
                assert await client.recv() == msg

    async def main() -> None:
        async with EchoServer(timeout=handshake_timeout) as server:
            port = server.port
            async with raw(port) as (silent_r, _), raw(port) as (slow_r, slow_w), \
                    raw(port) as (junk_r, junk_w):
                slow_w.write(b"\x00")  # one byte of act one, then nothing
                junk_w.write(os.urandom(ACT_ONE_SIZE))
                # A client that completes the handshake, then sends a forged frame.
                _, bad_w, bad = await raw_handshake(port)
                bad_w.write(os.urandom(200))
                loop = asyncio.get_running_loop()
                started = loop.time()
                await asyncio.gather(*(good(port, n) for n in range(30)))
                elapsed = loop.time() - started
                assert elapsed < handshake_timeout, "good clients waited for the bad ones"
                # The silent and the slow clients are still pending, not blocking anyone.
                assert not silent_r.at_eof() and not slow_r.at_eof()
                assert await eof_within(junk_r, 5) == b""
                assert await eof_within(silent_r, handshake_timeout + 5) == b""
                assert await eof_within(slow_r, 5) == b""
                with pytest.raises(ConnectionClosedError):
                    await bad.recv()
                bad.abort()
                await bad.wait_closed()
            outcomes = [server.outcomes.get_nowait() for _ in range(server.outcomes.qsize())]
            streams = [o for o in outcomes if isinstance(o, NoiseStream)]
            errors = [o for o in outcomes if not isinstance(o, NoiseStream)]
            assert len(streams) == 31  # 30 good ones and the forger
            assert sum(isinstance(e, HandshakeTimeoutError) for e in errors) == 2
            assert sum(isinstance(e, HandshakeError) for e in errors) == 1
            ends = [server.ends.get_nowait() for _ in range(server.ends.qsize())]
            assert sum(isinstance(e, DecryptionError) for e in ends) == 1  # the forger
            assert sum(isinstance(e, ConnectionClosedError) for e in ends) == 30
    run(main(), limit=120 * timeout_factor)


"""Hearth's BOLT #8 transport against an independent implementation, pyln-proto, both ways.

pyln-proto lives in its own venv (``scripts/setup-interop`` makes ``.cache/venv-interop``;
its coincurve pin clashes with ours) and runs as ``firmware-tests/tools/pyln-peer``, an
echo node, in a subprocess on a loopback socket. ``HEARTH_INTEROP_PYTHON`` overrides the
interpreter. The tests skip only when that venv is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from appliance.transport.noise import MAX_MESSAGE_SIZE, BadTagError, Keypair
from appliance.transport.stream import NoiseStream, accept_handshake, connect

__all__: list[str] = []

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
PEER = REPO / "firmware-tests" / "tools" / "pyln-peer"
HOST = "127.0.0.1"
HEARTH = Keypair(b"\x21" * 32)
PYLN = Keypair(b"\x11" * 32)
COUNT = 1200  # echoed messages: > 500 per direction rotates each key twice


@pytest.fixture(scope="module")
def interop_python() -> Path:
    env = os.environ.get("HEARTH_INTEROP_PYTHON")
    python = Path(env) if env else REPO / ".cache" / "venv-interop" / "bin" / "python"
    if not python.exists():
        pytest.skip(f"pyln-proto interop venv missing ({python}): run scripts/setup-interop")
    # The venv exists, so a broken one is a failure, not a skip.
    subprocess.run([str(python), "-c", "import pyln.proto.wire"], check=True, timeout=60)
    return python


def run(coro: Awaitable[T], limit: float) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, limit)
    return asyncio.run(bounded())


class Peer:
    """The pyln-peer subprocess and its JSON-lines reports."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, python: Path, *args: str) -> AsyncIterator[Peer]:
        """The peer for the block; killed (if still running) and reaped after it."""
        proc = await asyncio.create_subprocess_exec(
            str(python), str(PEER), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        peer = cls(proc)
        try:
            yield peer
        finally:
            peer.kill()
            await peer.finish()

    async def event(self, timeout: float = 30.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise AssertionError(f"pyln-peer exited without a report: {await self._stderr()}")
        event: dict[str, Any] = json.loads(line)
        return event

    async def _stderr(self) -> str:
        assert self.proc.stderr is not None
        return (await self.proc.stderr.read()).decode(errors="replace")

    async def finish(self, timeout: float = 30.0) -> int:
        await asyncio.wait_for(self.proc.wait(), timeout)
        await self._stderr()  # drain, so the pipe transport closes
        assert self.proc.returncode is not None
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()

    async def done(self) -> None:
        """It echoed every message and exited cleanly."""
        assert await self.event() == {"event": "done", "messages": COUNT + 1}
        assert await self.finish() == 0


@contextlib.asynccontextmanager
async def listening(on_connect: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                         Awaitable[None]]) -> AsyncIterator[int]:
    """A TCP server on HOST for the block; yields its port."""
    server = await asyncio.start_server(on_connect, HOST, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def messages(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    sizes = [0, 1, 15, 16, 17, 1000, 16_384, MAX_MESSAGE_SIZE]
    sizes += [rng.randrange(200) if rng.random() < 0.9 else rng.randrange(MAX_MESSAGE_SIZE + 1)
              for _ in range(COUNT - len(sizes))]
    return [rng.randbytes(size) for size in sizes]


async def exchange(stream: NoiseStream, peer_pub: bytes, seed: int) -> None:
    """The pyln-peer script: its greeting, then every message echoed, sent and read concurrently."""
    assert await stream.recv(timeout=30) == b"pyln:" + peer_pub.hex().encode()
    batch = messages(seed)

    async def send_all() -> None:
        for msg in batch:
            await stream.send(msg)
        await stream.send(b"bye")

    async def recv_all() -> list[bytes]:
        return [await stream.recv(timeout=30) for _ in range(len(batch) + 1)]

    _, echoed = await asyncio.gather(send_all(), recv_all())
    assert echoed[-1] == b"bye"
    assert echoed[:-1] == batch
    # Both sides rotated in step: COUNT + 1 messages sent, greeting + COUNT + 1 received.
    assert stream.session.send_cipher.nonce == 2 * (COUNT + 1) % 1000
    assert stream.session.recv_cipher.nonce == 2 * (COUNT + 2) % 1000


def test_hearth_initiator_to_pyln_responder(interop_python: Path) -> None:
    async def main() -> None:
        async with Peer.running(interop_python, "listen", "--key", PYLN.secret.hex()) as peer:
            listening = await peer.event()
            assert listening["node_id"] == PYLN.public.hex()
            async with await connect(HOST, listening["port"], HEARTH, PYLN.public) as stream:
                assert stream.remote_static == PYLN.public
                shaken = await peer.event()
                # pyln's responder learned our static key from act three.
                assert shaken == {"event": "handshake", "remote_pubkey": HEARTH.public.hex()}
                await exchange(stream, PYLN.public, seed=1)
            await peer.done()
    run(main(), 120)


def test_pyln_initiator_to_hearth_responder(interop_python: Path) -> None:
    async def main() -> None:
        accepted: asyncio.Queue[NoiseStream | BaseException] = asyncio.Queue()
        done = asyncio.Event()

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                stream = await accept_handshake(reader, writer, HEARTH, 10.0)
            except BaseException as exc:
                await accepted.put(exc)
                return
            await accepted.put(stream)
            await done.wait()
            stream.close()
            await stream.wait_closed()

        async with listening(on_connect) as port, Peer.running(
                interop_python, "connect", "--key", PYLN.secret.hex(),
                "--node-id", HEARTH.public.hex(), "--port", str(port)) as peer:
            try:
                stream = await asyncio.wait_for(accepted.get(), 30)
                assert isinstance(stream, NoiseStream), stream
                assert stream.remote_static == PYLN.public  # what Hearth's whitelist would check
                assert await peer.event() == {"event": "handshake",
                                              "remote_pubkey": HEARTH.public.hex()}
                await exchange(stream, PYLN.public, seed=2)
                await peer.done()
            finally:
                done.set()
    run(main(), 120)


def test_pyln_with_the_wrong_node_id_is_refused(interop_python: Path) -> None:
    async def main() -> None:
        accepted: asyncio.Queue[BaseException | None] = asyncio.Queue()

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                stream = await accept_handshake(reader, writer, HEARTH, 10.0)
            except BaseException as exc:
                await accepted.put(exc)
                return
            stream.close()
            await accepted.put(None)

        async with listening(on_connect) as port, Peer.running(
                interop_python, "connect", "--key", PYLN.secret.hex(),
                "--node-id", Keypair.generate().public.hex(), "--port", str(port)) as peer:
            refused = await asyncio.wait_for(accepted.get(), 30)
            assert isinstance(refused, BadTagError) and refused.code == "ACT1_BAD_TAG"
            report = await peer.event()
            assert report["event"] == "error" and "act2" in report["error"]
            assert await peer.finish() == 1
    run(main(), 60)

"""Benchmark: the BOLT #8 (Noise_XK) transport: messages/s, MB/s and handshakes/s.

Run: .venv/bin/python firmware-tests/bench/noise_throughput.py [--small 20000] [--large 2000]
     [--handshakes 300]

Pure figures time ``NoiseSession`` alone (encrypt, and encrypt plus the receiver's
decrypt); socket figures send one way over 127.0.0.1 through ``NoiseStream`` with the
receiver in the same event loop, so they include asyncio and both sides' crypto on one
core. Handshake figures count both sides' work (three ECDHs each) in one process.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # standalone: find `appliance`

from appliance.transport.noise import HEADER_SIZE, Initiator, Keypair, NoiseSession, Responder  # noqa: E402
from appliance.transport.stream import NoiseStream, accept_handshake, connect, start_server  # noqa: E402

__all__ = ["main"]

BOX = Keypair(b"\x21" * 32)
PHONE = Keypair(b"\x11" * 32)


def best(fn: Callable[[], object], runs: int = 3) -> float:
    """Fastest of ``runs`` timings of ``fn``: shared machines are noisy."""
    elapsed = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        elapsed = min(elapsed, time.perf_counter() - start)
    return elapsed


def pair() -> tuple[NoiseSession, NoiseSession]:
    ini, res = Initiator(PHONE, BOX.public), Responder(BOX)
    act3 = ini.read_act_two(res.read_act_one(ini.act_one()))
    return ini.session, res.read_act_three(act3)


def report(label: str, count: int, size: int, seconds: float) -> None:
    print(f"  {label:<36} {count / seconds:>11,.0f} msg/s {count * size / seconds / 1e6:>9.1f} MB/s")


def bench_pure(size: int, count: int) -> None:
    message = bytes(size)

    def encrypt_only() -> None:
        a, _ = pair()
        for _ in range(count):
            a.encrypt(message)

    def round_trip() -> None:
        a, b = pair()
        for _ in range(count):
            frame = a.encrypt(message)
            b.decrypt_length(frame[:HEADER_SIZE])
            b.decrypt_body(frame[HEADER_SIZE:])

    report(f"{size:,} B encrypt", count, size, best(encrypt_only))
    report(f"{size:,} B encrypt + decrypt", count, size, best(round_trip))


async def _socket_run(size: int, count: int) -> float:
    message = bytes(size)
    accepted: asyncio.Queue[NoiseStream] = asyncio.Queue()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(await accept_handshake(reader, writer, BOX))

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = await connect("127.0.0.1", port, PHONE, BOX.public)
        box = await accepted.get()

        async def send_all() -> None:
            for _ in range(count):
                client.write(message)
                await client.drain()

        async def recv_all() -> None:
            for _ in range(count):
                await box.recv()

        start = time.perf_counter()
        await asyncio.gather(send_all(), recv_all())
        elapsed = time.perf_counter() - start
        for stream in (client, box):
            stream.close()
            await stream.wait_closed()
        return elapsed
    finally:
        server.close()
        await server.wait_closed()


def bench_socket(size: int, count: int) -> None:
    seconds = best(lambda: asyncio.run(_socket_run(size, count)))
    report(f"{size:,} B over loopback (one way)", count, size, seconds)


async def _socket_handshakes(count: int) -> float:
    async def handler(stream: NoiseStream) -> None:
        return None  # the server closes the stream

    server = await start_server(handler, "127.0.0.1", 0, BOX)
    try:
        start = time.perf_counter()
        for _ in range(count):
            stream = await connect("127.0.0.1", server.port, PHONE, BOX.public)
            stream.close()
            await stream.wait_closed()
        return time.perf_counter() - start
    finally:
        server.close()
        await server.wait_closed()


def bench_handshakes(count: int) -> None:
    def pure() -> None:
        for _ in range(count):
            pair()

    seconds = best(pure)
    print(f"  {'handshake, in process (both sides)':<36} {count / seconds:>11,.0f} /s "
          f"{seconds / count * 1e3:>8.2f} ms each")
    seconds = best(lambda: asyncio.run(_socket_handshakes(count)))
    print(f"  {'connect + handshake over loopback':<36} {count / seconds:>11,.0f} /s "
          f"{seconds / count * 1e3:>8.2f} ms each")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=20_000, help="100-byte messages per run")
    parser.add_argument("--large", type=int, default=2_000, help="16 KB messages per run")
    parser.add_argument("--handshakes", type=int, default=300, help="handshakes per run")
    args = parser.parse_args(argv)
    print(f"BOLT 8 transport, {platform.python_implementation()} {platform.python_version()} "
          f"on {platform.machine()} (best of 3 runs)")
    print("messages:")
    for size, count in ((100, args.small), (16_384, args.large)):
        bench_pure(size, count)
        bench_socket(size, count)
    print("handshakes:")
    bench_handshakes(args.handshakes)
    return 0


if __name__ == "__main__":
    sys.exit(main())

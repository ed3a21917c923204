"""Hostile LAN load on the real indexer: what a paired and a polite client still get.

    .venv/bin/python firmware-tests/bench/hostile_load.py [--hostile 1000] [--seconds 60]
        [--addresses 50]

A real regtest bitcoind and ``appliance run indexer`` with a wallet that has history. An
attacker process keeps ``--hostile`` TCP connections going from ``--addresses`` loopback
addresses (127.0.0.2...), reconnecting whenever one is closed or refused:

* idle: connects, writes a blank line every 5 s, never sends ``server.version``;
* slowloris: sends a ``server.version`` request one byte a second;
* junk batches: negotiates, then sends batches of 2,000 bogus requests and garbage lines;
* 1 MB arrays: negotiates, then repeats a 1 MB ``[1,1,...]`` line.

The attacker runs at nice 19: on the LAN it would have its own CPU, here it shares the
indexer's two cores. Meanwhile a paired Noise client and an unauthenticated well-behaved TCP client (from
127.0.0.1) each call ``blockchain.scripthash.get_history`` and ``server.ping`` in turn,
20 times a second, and their latencies are compared with a quiet baseline. Prints
p50/p99, the connections the attacker held open, the indexer's resident memory (peak
during the attack and after it), and its refusal counters. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from blockgen import bindir  # noqa: E402
from functional.framework.appliance import IndexerProcess, scripthash_of  # noqa: E402
from functional.framework.node import NodeFactory, build_cached_chain  # noqa: E402

from appliance.pairing.payload import PairingPayload  # noqa: E402
from appliance.transport.noise import Keypair  # noqa: E402
from appliance.transport.stream import NoiseStream, connect  # noqa: E402

KINDS = ("idle", "slowloris", "junk", "array")
VERSION = json.dumps({"id": 0, "method": "server.version",
                      "params": ["hostile", "1.4"]}).encode() + b"\n"
JUNK = json.dumps([{"id": i, "method": "no.such.method", "params": [i]}
                   for i in range(2000)]).encode() + b"\n" + b"}{ not json\n" * 50
ARRAY = b"[" + b"1," * 499_990 + b"1]\n"


# --- the attacker (its own process) -------------------------------------------------------

async def _attack_one(port: int, source: str, kind: str, held: list[int], stop: float) -> None:
    while time.monotonic() < stop:
        writer = None
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                           local_addr=(source, 0))
            held[0] += 1
            try:
                await _behave(reader, writer, kind, stop)
            finally:
                held[0] -= 1
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if writer is not None:
                writer.transport.abort()
        await asyncio.sleep(0.5)  # then come back


async def _behave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, kind: str,
                  stop: float) -> None:
    async def drain_replies() -> None:
        while await reader.read(65536):
            pass

    replies = asyncio.create_task(drain_replies())
    try:
        if kind in ("junk", "array"):
            writer.write(VERSION)
        step = 0
        while time.monotonic() < stop and not replies.done():
            if kind == "idle":
                writer.write(b"\n")
                await asyncio.sleep(5)
            elif kind == "slowloris":
                writer.write(VERSION[step % len(VERSION):step % len(VERSION) + 1])
                await asyncio.sleep(1)
            elif kind == "junk":
                writer.write(JUNK)
                await asyncio.sleep(0.2)
            else:
                writer.write(ARRAY)
                await asyncio.sleep(0.2)
            await writer.drain()
            step += 1
    finally:
        replies.cancel()
        with contextlib.suppress(BaseException):
            await replies


def attacker(port: int, count: int, addresses: int, seconds: float,
             samples: Any, kinds: tuple[str, ...] = KINDS) -> None:
    # On the LAN the attacker has its own CPU; here it shares ours, so it yields first.
    os.nice(19)

    async def main() -> None:
        held = [0]
        stop = time.monotonic() + seconds
        tasks = [asyncio.create_task(_attack_one(port, f"127.0.0.{2 + i % addresses}",
                                                 kinds[i % len(kinds)], held, stop))
                 for i in range(count)]
        while time.monotonic() < stop:
            await asyncio.sleep(1)
            samples.put(held[0])
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


# --- the measured clients -----------------------------------------------------------------

class LineClient:
    """Newline JSON over a plain stream (TCP) or a Noise stream."""

    def __init__(self, send: Callable[[bytes], Awaitable[None]],
                 recv: Callable[[], Awaitable[bytes]]) -> None:
        self._send, self._recv = send, recv
        self._buffer = b""
        self._id = 0

    async def call(self, method: str, *params: Any, named: dict[str, Any] | None = None) -> Any:
        self._id += 1
        await self._send(json.dumps({"jsonrpc": "2.0", "id": self._id, "method": method,
                                     "params": named if named is not None else list(params)}
                                    ).encode() + b"\n")
        while True:
            while b"\n" not in self._buffer:
                data = await self._recv()
                if not data:
                    raise ConnectionError("closed")
                self._buffer += data
            line, self._buffer = self._buffer.split(b"\n", 1)
            msg = json.loads(line)
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(msg["error"])
                return msg["result"]


async def tcp_client(port: int) -> tuple[LineClient, int]:
    """A polite client; retries while the server refuses it. Returns (client, attempts)."""
    for attempt in range(1, 1000):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)

            async def send(data: bytes, writer: asyncio.StreamWriter = writer) -> None:
                writer.write(data)
                await writer.drain()

            client = LineClient(send, lambda reader=reader: reader.read(65536))
            await asyncio.wait_for(client.call("server.version", "polite", "1.4"), 10)
            return client, attempt
        except (ConnectionError, OSError, TimeoutError):
            await asyncio.sleep(0.2)
    raise RuntimeError("never admitted")


async def noise_client(box: IndexerProcess, key: Keypair) -> tuple[LineClient, NoiseStream]:
    status = box.status()["indexer"]["pairing"]
    stream = await connect("127.0.0.1", box.noise_port, key, bytes.fromhex(status["box_key"]),
                           timeout=10)
    client = LineClient(stream.send, lambda: stream.recv(timeout=30))
    await client.call("server.version", "paired", "1.4")
    return client, stream


async def measure(client: LineClient, scripthash: str, seconds: float) -> list[float]:
    latencies: list[float] = []
    stop = time.monotonic() + seconds
    i = 0
    while time.monotonic() < stop:
        start = time.perf_counter()
        if i % 2:
            await client.call("server.ping")
        else:
            await client.call("blockchain.scripthash.get_history", scripthash)
        latencies.append(time.perf_counter() - start)
        i += 1
        await asyncio.sleep(0.05)
    return latencies


def percentiles(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"p50 {statistics.median(ms):6.1f} ms  p99 {p99:6.1f} ms  max {ms[-1]:6.1f} ms  (n={len(ms)})"


def memory_mib(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {line.split(":")[0]: int(line.split()[1]) // 1024 for line in status.splitlines()
            if line.startswith(("VmRSS", "VmHWM"))}


def raise_fd_limit(need: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        soft = min(hard, max(need, soft)) if hard != resource.RLIM_INFINITY else need
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hostile", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--addresses", type=int, default=50)
    p.add_argument("--baseline", type=float, default=10.0)
    p.add_argument("--kinds", default=",".join(KINDS), help="attacks to mix (comma-separated)")
    args = p.parse_args()
    kinds = tuple(args.kinds.split(","))
    if not set(kinds) <= set(KINDS):
        p.error(f"--kinds: choose from {', '.join(KINDS)}")
    # The indexer (a child) inherits the limit: it and the attacker each hold ~1,000 sockets.
    fds = raise_fd_limit(4 * args.hostile + 1024)
    tmp = Path(tempfile.mkdtemp(prefix="hearth-bench-"))
    bins = bindir()
    factory = NodeFactory(tmp, bins, cache_dir=build_cached_chain(tmp / "cache", bins))
    node = factory.create()
    box = IndexerProcess(tmp / "appliance", node)
    try:
        box.start()
        node.createwallet("w1")
        box.wallet_add(*node.descriptors("w1"))
        address = node.rpc("getnewaddress", wallet="w1")
        for _ in range(20):
            node.send(address, "0.01")
        node.mine(1)
        box.wait_synced()
        scripthash = scripthash_of(node.validateaddress(address)["scriptPubKey"])
        assert box.process is not None
        pid = box.process.pid
        token = PairingPayload.decode(box.cli("pairing", "show").stdout.strip()).token
        key = Keypair.generate()

        async def pair() -> None:
            status = box.status()["indexer"]["pairing"]
            stream = await connect("127.0.0.1", box.noise_port, key,
                                   bytes.fromhex(status["box_key"]), timeout=10)
            client = LineClient(stream.send, lambda: stream.recv(timeout=10))
            await client.call("hearth.pair", named={"token": token.hex(), "label": "bench"})
            stream.close()

        asyncio.run(pair())
        rest = memory_mib(pid)

        async def run_clients(seconds: float) -> tuple[list[float], list[float], int]:
            paired, stream = await noise_client(box, key)
            polite, attempts = await tcp_client(box.tcp_port)
            try:
                a, b = await asyncio.gather(measure(paired, scripthash, seconds),
                                            measure(polite, scripthash, seconds))
            finally:
                stream.close()
            return a, b, attempts

        quiet_paired, quiet_polite, _ = asyncio.run(run_clients(args.baseline))

        samples: Any = multiprocessing.Queue()
        attack = multiprocessing.Process(target=attacker, args=(
            box.tcp_port, args.hostile, args.addresses, args.seconds + 15, samples, kinds))
        attack.start()
        time.sleep(10)  # let the attacker reach its full count
        peak_rss = 0
        stop_sampling = False

        async def sample_rss() -> None:
            nonlocal peak_rss
            while not stop_sampling:
                peak_rss = max(peak_rss, memory_mib(pid)["VmRSS"])
                await asyncio.sleep(0.5)

        async def under_attack() -> tuple[list[float], list[float], int]:
            nonlocal stop_sampling
            sampler = asyncio.create_task(sample_rss())
            try:
                return await run_clients(args.seconds)
            finally:
                stop_sampling = True
                await sampler

        hot_paired, hot_polite, attempts = asyncio.run(under_attack())
        during = memory_mib(pid)
        attack.join(timeout=60)
        held: list[int] = []
        while not samples.empty():
            held.append(samples.get())
        time.sleep(3)
        after = memory_mib(pid)
        time.sleep(7)  # the server's 5 s sweep hands back what the last burst freed
        later = memory_mib(pid)
        electrum = box.status()["indexer"]["electrum"]
        print(f"hostile_load: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
              f"{platform.node()}, {os.cpu_count()} cores, load average "
              f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}; fd limit {fds}")
        print(f"  attack: {args.hostile} connections ({', '.join(kinds)}; in equal shares) "
              f"from {args.addresses} addresses, {args.seconds:.0f} s measured")
        if held:
            print(f"  attacker's connections open (accepted, not yet closed): median "
                  f"{statistics.median(held):.0f}, max {max(held)}")
        print(f"  paired (Noise)   quiet:  {percentiles(quiet_paired)}")
        print(f"  paired (Noise)   attack: {percentiles(hot_paired)}")
        print(f"  polite (TCP)     quiet:  {percentiles(quiet_polite)}")
        print(f"  polite (TCP)     attack: {percentiles(hot_polite)}  "
              f"(admitted on attempt {attempts})")
        print(f"  indexer RSS: at rest {rest['VmRSS']} MiB, peak during attack {peak_rss} MiB "
              f"(sampled every 0.5 s), VmHWM {during['VmHWM']} MiB, "
              f"after the attack {after['VmRSS']} MiB (3 s), {later['VmRSS']} MiB (10 s)")
        print("  refused: " + ", ".join(f"{k} {electrum[k]}" for k in (
            "sessions_refused", "requests_refused", "version_timeouts")))
    finally:
        box.stop()
        factory.stop_all()


if __name__ == "__main__":
    main()

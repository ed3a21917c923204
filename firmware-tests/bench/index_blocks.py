"""Indexer benchmarks: block indexing throughput and get_history latency.

    .venv/bin/python firmware-tests/bench/index_blocks.py

1. Indexing: mainnet-sized regtest blocks (~1.2-1.5 MB, ~3,000 mixed txs; blockgen.py)
   connected into a real LevelDB index watching a wallet of 10,000 scripts, ~5% of
   which the blocks pay. Figures: blocks/s, MB/s, per-block ms, bytes written.
2. get_history: a wallet of 500 scripts and 5,000 confirmed transactions, asked over a
   real Electrum TCP connection, one request at a time: p50/p99 latency.
3. Resident memory (VmRSS/VmHWM) of this process, which is what the indexer holds.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from appliance.chain import parse_block, script_to_scripthash  # noqa: E402
from appliance.electrum.server import ElectrumServer, SessionManager  # noqa: E402
from appliance.indexer.electrum_backend import IndexBackend  # noqa: E402
from appliance.indexer.index import Indexer  # noqa: E402
from appliance.indexer.matcher import Funding, TxMatch  # noqa: E402
from appliance.indexer.store import IndexStore  # noqa: E402
from appliance.indexer.wallets import Branch, ScriptRef, Wallet  # noqa: E402


def rss() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS", "VmHWM")):
            key, value = line.split(":")
            out[key] = int(value.split()[0]) // 1024
    return out


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class NoRPC:
    async def call(self, method: str, *params: object) -> object:
        raise RuntimeError(f"the benchmark derives no scripts ({method})")


def watch(indexer: Indexer, scripts: list[bytes]) -> None:
    wid = b"benchwal"
    indexer.wallets[wid] = Wallet(wid, [Branch("raw()", True, derived=len(scripts),
                                               used=len(scripts))], gap=20, birthday=0,
                                  state="live")
    for i, script in enumerate(scripts):
        indexer.scripts.add(script, ScriptRef(wid, 0, i), True)


def bench_indexing(work: Path, blocks: list[bytes], rounds: int) -> None:
    parsed = [parse_block(b) for b in blocks]
    outputs = [o.script_pubkey for b in parsed for tx in b.txs for o in tx.outputs]
    rng = random.Random(1)
    paid = rng.sample(sorted(set(outputs)), 500)
    scripts = paid + [rng.randbytes(22) for _ in range(10_000 - len(paid))]
    store = IndexStore(work / "index", b"\0" * 32)
    indexer = Indexer(store, NoRPC(), "regtest")  # type: ignore[arg-type]
    watch(indexer, scripts)
    total_bytes = sum(len(b) for b in blocks) * rounds
    total_txs = sum(len(b.txs) for b in parsed) * rounds
    start = time.perf_counter()
    height = 0
    touched = 0

    async def run() -> None:
        nonlocal height, touched
        for _ in range(rounds):
            for raw in blocks:
                block = parse_block(raw)
                height += 1
                touched += len(await indexer.connect_block(block, height))

    asyncio.run(run())
    elapsed = time.perf_counter() - start
    store.sync()
    written = dir_size(work / "index")
    print(f"indexing: {height} blocks, {total_bytes / 1e6:.1f} MB, {total_txs} txs, "
          f"wallet of {len(scripts)} scripts")
    print(f"  {height / elapsed:6.2f} blocks/s  {total_bytes / elapsed / 1e6:6.2f} MB/s  "
          f"{total_txs / elapsed:8.0f} tx/s  {elapsed * 1000 / height:6.1f} ms/block "
          f"(parse included)")
    print(f"  {touched} scripthash updates; index on disk {written / 1e6:.2f} MB "
          f"({written / total_bytes * 100:.2f}% of block bytes)")
    store.close()


async def bench_history(work: Path, requests: int) -> None:
    store = IndexStore(work / "history", b"\0" * 32)
    indexer = Indexer(store, NoRPC(), "regtest")  # type: ignore[arg-type]
    rng = random.Random(2)
    scripts = [b"\x00\x14" + rng.randbytes(20) for _ in range(500)]
    watch(indexer, scripts)
    # 5,000 transactions: each pays one of the wallet's scripts, ~10 per script,
    # 5 per block over 1,000 blocks.
    height = 0
    for n in range(5_000):
        if n % 5 == 0:
            height += 1
            batch = store.begin_block(height)
        script = scripts[n % len(scripts)]
        txid = rng.randbytes(32)
        sh = script_to_scripthash(script)
        from appliance.chain import Tx, TxIn, TxOut
        tx = Tx(2, [TxIn(rng.randbytes(32), 0, b"", 0xFFFFFFFD)], [TxOut(50_000, script)], 0,
                txid, rng.randbytes(220), 220)
        indexer.write_matches(batch, height, [txid] * 5, [TxMatch(
            tx, n % 5, [Funding(0, script, sh, 50_000)], [])])
        if n % 5 == 4:
            store.commit_block(batch, bytes(80), rng.randbytes(32))
    backend = IndexBackend(indexer, NoRPC())  # type: ignore[arg-type]
    manager = SessionManager(backend)
    server = ElectrumServer(manager, host="127.0.0.1", tcp_port=0)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.tcp_port)

        async def call(i: int, method: str, params: list[object]) -> object:
            writer.write(json.dumps({"jsonrpc": "2.0", "id": i, "method": method,
                                     "params": params}).encode() + b"\n")
            await writer.drain()
            return json.loads(await reader.readline())

        await call(0, "server.version", ["bench", "1.4"])
        latencies = []
        for i in range(requests):
            sh = script_to_scripthash(scripts[i % len(scripts)]).hex()
            t0 = time.perf_counter()
            reply = await call(i + 1, "blockchain.scripthash.get_history", [sh])
            latencies.append(time.perf_counter() - t0)
            assert isinstance(reply, dict) and len(reply["result"]) == 10
        writer.close()
        latencies.sort()
        p50 = statistics.median(latencies) * 1000
        p99 = latencies[int(len(latencies) * 0.99)] * 1000
        print(f"get_history: wallet of {len(scripts)} scripts, 5,000 txs (10 per script), "
              f"{requests} requests over TCP")
        print(f"  p50 {p50:.2f} ms  p99 {p99:.2f} ms  "
              f"({1000 / statistics.mean([x * 1000 for x in latencies]):.0f} req/s serial)")
    finally:
        await server.close()
        store.close()


def main() -> None:
    from blockgen import big_blocks

    blocks = big_blocks()
    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, python "
          f"{platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        bench_indexing(Path(tmp), blocks, rounds=5)
        asyncio.run(bench_history(Path(tmp), requests=2_000))
    mem = rss()
    print(f"memory: VmRSS {mem['VmRSS']} MiB, peak VmHWM {mem['VmHWM']} MiB "
          "(blocks held in memory included)")


if __name__ == "__main__":
    main()

"""Watch on subscribe (ad-hoc scripts): what it costs the indexer.

    .venv/bin/python firmware-tests/bench/adhoc_watch.py

1. Block matching: a mainnet-sized block (~3,000 txs, blockgen.py) matched against a
   wallet of 10,000 scripts, without and with ad-hoc watches (which are known by hash
   only, so every output script gets hashed while any exists).
2. The catch-up at subscribe time, per new batch of scripts: re-reading one block
   (parse + match; multiply by ADHOC_RESCAN_BLOCKS, plus bitcoind's getblock), and
   matching the ring of recent mempool transactions (RECENT_RAW_TXS).
3. Memory of the ad-hoc set (MAX_ADHOC entries).
Prints figures; asserts nothing.
"""

from __future__ import annotations

import os
import platform
import random
import sys
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from appliance.chain import parse_block, parse_tx, script_to_scripthash  # noqa: E402
from appliance.indexer.adhoc import (  # noqa: E402
    ADHOC_RESCAN_BLOCKS,
    MAX_ADHOC,
    AdhocEntry,
    AdhocWatches,
)
from appliance.indexer.follower import RECENT_RAW_TXS  # noqa: E402
from appliance.indexer.matcher import match_txs  # noqa: E402


def timed(fn, rounds: int) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1000


def main() -> None:
    from blockgen import big_blocks

    raw_blocks = big_blocks()
    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, python "
          f"{platform.python_version()}")
    block = parse_block(raw_blocks[0])
    outputs = [o.script_pubkey for tx in block.txs for o in tx.outputs]
    rng = random.Random(1)
    live = set(rng.sample(sorted(set(outputs)), 150)) | {os.urandom(22) for _ in range(9_850)}
    adhoc = AdhocWatches({os.urandom(32): AdhocEntry(0, 0) for _ in range(100)})

    def lookup(op: bytes) -> None:
        return None

    def plain() -> None:
        match_txs(block.txs, live.__contains__, lookup)

    def with_adhoc() -> None:
        match_txs(block.txs, lambda s: s in live or script_to_scripthash(s) in adhoc, lookup)

    base = timed(plain, 5)
    extra = timed(with_adhoc, 5)
    print(f"1. matching one block ({len(block.txs):,d} txs, {len(outputs):,d} outputs, "
          f"{len(raw_blocks[0]) / 1e6:.2f} MB):")
    print(f"   wallet scripts only      {base:7.1f} ms")
    print(f"   + ad-hoc watches         {extra:7.1f} ms  (x{extra / base:.2f}, "
          f"+{extra - base:.1f} ms per block)")

    shs = {os.urandom(32) for _ in range(5)}

    def rescan_one() -> None:
        b = parse_block(raw_blocks[1])
        match_txs(b.txs, lambda s: script_to_scripthash(s) in shs, lookup)

    per_block = timed(rescan_one, 3)
    print("2. catch-up per subscription batch:")
    print(f"   re-read one block (parse + hash-match)  {per_block:7.1f} ms; "
          f"x{ADHOC_RESCAN_BLOCKS} blocks = {per_block * ADHOC_RESCAN_BLOCKS:.0f} ms "
          "(+ getblock transfer)")
    ring = [tx.raw for tx in block.txs[1:RECENT_RAW_TXS + 1]]

    def ring_match() -> None:
        for raw in ring:
            tx = parse_tx(raw)
            any(script_to_scripthash(o.script_pubkey) in shs for o in tx.outputs)

    ring_ms = timed(ring_match, 3)
    ring_bytes = sum(len(r) for r in ring)
    print(f"   match the ring of {len(ring):,d} recent mempool txs   {ring_ms:7.1f} ms "
          f"(ring holds {ring_bytes / 1e6:.2f} MB raw)")

    tracemalloc.start()
    full = AdhocWatches({os.urandom(32): AdhocEntry(1, 1) for _ in range(MAX_ADHOC)})
    size, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"3. memory: {len(full):,d} ad-hoc watches = {size / 1e6:.2f} MB "
          f"({size / len(full):.0f} B each); on disk 16 B value + 33 B key each")


if __name__ == "__main__":
    main()

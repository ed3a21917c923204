"""Raw-block parse throughput of appliance.chain (MB/s and tx/s).

    .venv/bin/python firmware-tests/bench/parse_blocks.py [--rounds N] [--from-node CONFIG]

Default data: mainnet-sized regtest blocks (~1.5 MB, ~3,000 mixed txs; built once by
blockgen.py and cached). On the box, ``--from-node /etc/hearth/hearth.toml`` parses the
last blocks of the real node instead. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from appliance.chain import parse_block  # noqa: E402


async def blocks_from_node(config: str, count: int) -> list[bytes]:
    from appliance.config import load_config
    from appliance.node import BitcoinRPC

    cfg = load_config(config)
    async with BitcoinRPC.from_config(cfg) as rpc:
        height = await rpc.call("getblockcount")
        out = []
        for h in range(height, max(-1, height - count), -1):
            block_hash = await rpc.call("getblockhash", h)
            out.append(bytes.fromhex(await rpc.call("getblock", block_hash, 0)))
        return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--from-node", metavar="CONFIG")
    p.add_argument("--blocks", type=int, default=10, help="with --from-node: how many")
    args = p.parse_args()
    if args.from_node:
        blocks = asyncio.run(blocks_from_node(args.from_node, args.blocks))
        source = f"last {len(blocks)} blocks of the node in {args.from_node}"
    else:
        from blockgen import big_blocks

        blocks = big_blocks()
        source = f"{len(blocks)} generated regtest blocks"
    total_bytes = sum(len(b) for b in blocks)
    total_txs = sum(len(parse_block(b).txs) for b in blocks)
    timings = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        for raw in blocks:
            parse_block(raw)
        timings.append(time.perf_counter() - start)
    best, median = min(timings), statistics.median(timings)
    print(f"parse_blocks: {source}: {total_bytes / 1e6:.2f} MB, {total_txs} txs")
    print(f"  machine: {platform.machine()} {platform.processor() or ''} "
          f"python {platform.python_version()}")
    print(f"  best   {total_bytes / best / 1e6:8.2f} MB/s {total_txs / best:10.0f} tx/s "
          f"({best * 1000 / len(blocks):.1f} ms per block)")
    print(f"  median {total_bytes / median / 1e6:8.2f} MB/s {total_txs / median:10.0f} tx/s")


if __name__ == "__main__":
    main()

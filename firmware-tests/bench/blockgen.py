"""Mainnet-sized regtest blocks for benchmarks: ~3,000 mixed transactions, ~1.5 MB each.

Built once with a real bitcoind (firmware-tests/functional/framework) and cached under
.cache/bench/ as raw blocks, so benchmarks measure parsing and indexing, not mining.
Transactions: 2 inputs, 3 outputs each, rotating through P2PKH, P2SH-P2WPKH, P2WPKH
and P2TR, so the mix of legacy and witness data looks like a real block.
"""

from __future__ import annotations

import sys
import time
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))

from functional.framework.node import NodeFactory  # noqa: E402

ADDRESS_TYPES = ("legacy", "p2sh-segwit", "bech32", "bech32m")
CACHE = REPO / ".cache" / "bench"


def bindir() -> Path:
    import subprocess

    out = subprocess.run([str(REPO / "firmware-tests/tools/get-bitcoind"), "--print-bindir"],
                         check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def big_blocks(count: int = 2, txs_per_block: int = 3000) -> list[bytes]:
    """``count`` raw blocks of ``txs_per_block`` transactions (cached)."""
    paths = [CACHE / f"block-{txs_per_block}-{i}.bin" for i in range(count)]
    if all(p.exists() for p in paths):
        return [p.read_bytes() for p in paths]
    CACHE.mkdir(parents=True, exist_ok=True)
    work = CACHE / f"node-{int(time.time())}"
    factory = NodeFactory(work, bindir())
    try:
        node = factory.create(from_cache=False, extra_args=[
            "-maxmempool=300", "-blockmaxweight=4000000", "-limitancestorcount=1000",
            "-limitdescendantcount=1000", "-keypool=3000"])
        node.mine(101 + count * 30)
        blocks: list[bytes] = []
        for i in range(count):
            coins = _fan_out(node, 2 * txs_per_block)
            _spend_pairs(node, coins)
            (block_hash,) = node.mine(1)
            raw = bytes.fromhex(node.getblock(block_hash, 0))
            paths[i].write_bytes(raw)
            blocks.append(raw)
            print(f"built block {i}: {len(raw) / 1e6:.2f} MB, "
                  f"{len(node.getblock(block_hash, 1)['tx'])} txs", file=sys.stderr)
        return blocks
    finally:
        factory.stop_all()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def _fan_out(node, n: int) -> list[tuple[str, int, str, Decimal]]:  # type: ignore[no-untyped-def]
    """``n`` confirmed coins of 0.001 BTC on rotating address types."""
    coins = []
    per_tx = 500
    # Mature coinbases only: coin selection must not sweep up earlier tiny coins.
    big = [u for u in node.w("listunspent", 100) if u["amount"] >= 1]
    for start in range(0, n, per_tx):
        outputs = {}
        for j in range(min(per_tx, n - start)):
            outputs[node.new_address(ADDRESS_TYPES[(start + j) % 4])] = "0.001"
        coin = big.pop()
        txid = node.rpc("send", outputs, None, "unset", None,
                        {"inputs": [{"txid": coin["txid"], "vout": coin["vout"]}],
                         "add_inputs": False}, wallet=node.wallet)["txid"]
        tx = node.w("gettransaction", txid, False, True)["decoded"]
        for vout in tx["vout"]:
            if vout["value"] == Decimal("0.001"):
                coins.append((txid, vout["n"], vout["scriptPubKey"]["address"], vout["value"]))
    node.mine(1)
    return coins


def _spend_pairs(node, coins: list[tuple[str, int, str, Decimal]]) -> None:  # type: ignore[no-untyped-def]
    for i in range(0, len(coins) - 1, 2):
        inputs = [{"txid": c[0], "vout": c[1]} for c in coins[i:i + 2]]
        outputs = {node.new_address(ADDRESS_TYPES[(i // 2 + k) % 4]): "0.00063" for k in range(3)}
        raw = node.createrawtransaction(inputs, outputs)
        signed = node.w("signrawtransactionwithwallet", raw)
        node.sendrawtransaction(signed["hex"])


if __name__ == "__main__":
    for raw in big_blocks():
        print(len(raw))

"""Benchmark: BIP158 filter matching at mainnet size, for small and large wallets.

Run: .venv/bin/python firmware-tests/bench/bip158_match.py [--filters 200] [--n 2500]

Builds synthetic filters of N elements (mainnet blocks average ~2,500 filter elements)
with a reference encoder, then times what the indexer's backfill does per block: decode
``getblockfilter``'s hex and ask whether a wallet's scripts may be in it.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # standalone: find `appliance`

from appliance.indexer.bip158 import FILTER_M, FILTER_P, GCSFilter, ScriptSet  # noqa: E402

__all__ = ["bench_wallet", "encode_filter", "main"]


def encode_filter(block_hash: bytes, items: ScriptSet) -> bytes:
    """A basic filter of ``items`` (reference Golomb-Rice encoder, bit string based)."""
    n = len(items)
    values = sorted((h * n * FILTER_M) >> 64 for h in items.hashes(block_hash[:16]))
    bits: list[str] = []
    prev = 0
    for v in values:
        q, r = divmod(v - prev, 1 << FILTER_P)
        bits.append("1" * q + "0" + format(r, f"0{FILTER_P}b"))
        prev = v
    s = "".join(bits)
    s += "0" * (-len(s) % 8)
    count = bytes((n,)) if n < 0xFD else b"\xfd" + n.to_bytes(2, "little")
    return count + int(s, 2).to_bytes(len(s) // 8, "big")


def random_script(rng: random.Random) -> bytes:
    """A mainnet-like mix: P2WPKH, P2TR, P2PKH, P2SH, P2WSH."""
    kind = rng.random()
    if kind < 0.45:
        return b"\x00\x14" + rng.randbytes(20)
    if kind < 0.65:
        return b"\x51\x20" + rng.randbytes(32)
    if kind < 0.80:
        return b"\x76\xa9\x14" + rng.randbytes(20) + b"\x88\xac"
    if kind < 0.95:
        return b"\xa9\x14" + rng.randbytes(20) + b"\x87"
    return b"\x00\x20" + rng.randbytes(32)


def rate(label: str, count: int, fn: Callable[[], object], unit: str = "filters") -> float:
    """Best of three runs of ``fn`` (which handles ``count`` items): shared machines are noisy."""
    elapsed = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        fn()
        elapsed = min(elapsed, time.perf_counter() - start)
    per_s = count / elapsed
    print(f"  {label:<52} {per_s:>9,.0f} {unit}/s  ({elapsed / count * 1e3:7.3f} ms each)")
    return per_s


def python_merge_join(f: GCSFilter, query: ScriptSet) -> bool:
    """The textbook merge-join in Python, for comparison with the C-loop set probe."""
    wanted = sorted((h * f.modulus) >> 64 for h in query.hashes(f.key))
    i, end = 0, len(wanted)
    for value in f.filter_elements():
        while i < end and wanted[i] < value:
            i += 1
        if i == end:
            return False
        if wanted[i] == value:
            return True
    return False


def bench_wallet(scripts: list[bytes], filters: list[tuple[bytes, str]],
                 decoded: list[GCSFilter]) -> None:
    count = len(filters)
    start = time.perf_counter()
    wallet = ScriptSet(scripts)
    prep_ms = (time.perf_counter() - start) * 1e3
    print(f"wallet of {len(scripts):,} scripts (ScriptSet prepared once: {prep_ms:.1f} ms):")
    rate("hash the wallet under one block's key", count,
         lambda: [wallet.hashes(h[:16]) for h, _ in filters])
    rate("from_hex + match_any (the backfill loop)", count,
         lambda: [GCSFilter.from_hex(h, x).match_any(wallet) for h, x in filters])
    rate("match_any on decoded filters", count, lambda: [f.match_any(wallet) for f in decoded])
    rate("match_set on decoded filters", count, lambda: [f.match_set(wallet) for f in decoded])
    rate("match_any, unprepared list of scripts", count,
         lambda: [f.match_any(scripts) for f in decoded])
    rate("(comparison) Python merge-join, decoded filters", count,
         lambda: [python_merge_join(f, wallet) for f in decoded])
    hits = sum(f.match_any(wallet) for f in decoded)
    print(f"  false positives: {hits} of {count} filters "
          f"(expected ~{count * len(scripts) / FILTER_M:.2f})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--filters", type=int, default=200, help="filters per measurement")
    ap.add_argument("--n", type=int, default=2500, help="elements per filter")
    args = ap.parse_args(argv)
    rng = random.Random(158)

    print(f"building {args.filters} filters of N={args.n} ...", flush=True)
    filters: list[tuple[bytes, str]] = []
    for _ in range(args.filters):
        block_hash = rng.randbytes(32)
        items = ScriptSet(random_script(rng) for _ in range(args.n))
        filters.append((block_hash, encode_filter(block_hash, items).hex()))
    size = sum(len(h) // 2 for _, h in filters) / len(filters)
    print(f"  average filter size {size:,.0f} bytes (~{size * 8 / args.n:.1f} bits per element)")
    decoded = [GCSFilter.from_hex(h, x) for h, x in filters]
    count = len(filters)

    print("decode only:")
    rate("GCSFilter.from_hex", count, lambda: [GCSFilter.from_hex(h, x) for h, x in filters])

    for wallet_size in (100, 10_000):
        bench_wallet([random_script(rng) for _ in range(wallet_size)], filters, decoded)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The chain of the side-by-side benchmark (vs_electrumx.py), built once and cached.

    .venv/bin/python firmware-tests/bench/sidechain.py [--wallet-txs N] [--background N]

A regtest datadir (unpruned, ``-txindex``, BIP158 filter index) under
``.cache/bench/sidechain-<wallet>-<background>/`` holding:

- background traffic: one-input, two-output P2WPKH payments to keys nobody holds;
- one P2WPKH wallet (``wpkh(tpub/0/*)`` receive, ``/1/*`` change): ``--wallet-txs``
  transactions touching it, three receives to one spend, receive scripts used in order
  (a third of the payments reuse an earlier one), half of each spend back as change.

Transactions are built and signed here (coincurve, BIP143) and mined with
``generateblock``: bitcoind's own wallet is far too slow for this many on a shared
2-core machine. ``meta.json`` records the wallet's public descriptors and the sizes.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import random
import shutil
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coincurve import PrivateKey

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent))
sys.path.insert(0, str(HERE))

from blockgen import CACHE, bindir  # noqa: E402
from functional.framework.node import TestNode  # noqa: E402

from appliance.chain import base58check_encode, double_sha256, script_to_address  # noqa: E402

#: bitcoind options both servers need: ElectrumX reads any transaction by txid.
NODE_ARGS = ["-txindex=1", "-blockfilterindex=1", "-maxmempool=300", "-rest=1"]
_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_FEE = 300  # sats per transaction (about 2 sat/vB)
_TPUB = bytes.fromhex("043587cf")


def hash160(data: bytes) -> bytes:
    return hashlib.new("ripemd160", hashlib.sha256(data).digest()).digest()


@dataclass(frozen=True)
class Key:
    secret: PrivateKey
    pub: bytes

    @classmethod
    def of(cls, secret: bytes) -> Key:
        k = PrivateKey(secret)
        return cls(k, k.public_key.format(compressed=True))

    @property
    def script(self) -> bytes:
        return b"\x00\x14" + hash160(self.pub)


class Branch:
    """One non-hardened BIP32 branch: child keys ``m/branch/i``."""

    def __init__(self, secret: bytes, chain: bytes, branch: int) -> None:
        self.secret, self.chain = _ckd(secret, chain, branch)
        self.keys: list[Key] = []

    def key(self, i: int) -> Key:
        while len(self.keys) <= i:
            self.keys.append(Key.of(_ckd(self.secret, self.chain, len(self.keys))[0]))
        return self.keys[i]


def _ckd(secret: bytes, chain: bytes, i: int) -> tuple[bytes, bytes]:
    pub = PrivateKey(secret).public_key.format(compressed=True)
    mac = hmac.new(chain, pub + struct.pack(">I", i), hashlib.sha512).digest()
    child = (int.from_bytes(mac[:32], "big") + int.from_bytes(secret, "big")) % _N
    return child.to_bytes(32, "big"), mac[32:]


def tpub(secret: bytes, chain: bytes) -> str:
    pub = PrivateKey(secret).public_key.format(compressed=True)
    return base58check_encode(_TPUB + b"\x00" + bytes(4) + bytes(4) + chain + pub)


@dataclass
class Coin:
    txid: bytes
    vout: int
    value: int
    key: Key


def sign_tx(inputs: list[Coin], outputs: list[tuple[bytes, int]]) -> tuple[bytes, bytes]:
    """A version-2 segwit transaction spending P2WPKH ``inputs``: (raw, txid)."""
    def varint(n: int) -> bytes:
        return bytes([n]) if n < 0xFD else b"\xfd" + struct.pack("<H", n)

    version, locktime, seq = struct.pack("<i", 2), bytes(4), b"\xff\xff\xff\xff"
    prevouts = b"".join(c.txid + struct.pack("<I", c.vout) for c in inputs)
    outs = b"".join(struct.pack("<q", v) + varint(len(s)) + s for s, v in outputs)
    hash_prevouts = double_sha256(prevouts)
    hash_seq = double_sha256(seq * len(inputs))
    hash_outs = double_sha256(outs)
    witnesses = []
    for c in inputs:
        code = b"\x19\x76\xa9\x14" + hash160(c.key.pub) + b"\x88\xac"
        pre = (version + hash_prevouts + hash_seq + c.txid + struct.pack("<I", c.vout) + code
               + struct.pack("<q", c.value) + seq + hash_outs + locktime
               + struct.pack("<I", 1))
        sig = c.key.secret.sign(double_sha256(pre), hasher=None) + b"\x01"
        witnesses.append(b"\x02" + varint(len(sig)) + sig + varint(33) + c.key.pub)
    body = (varint(len(inputs))
            + b"".join(c.txid + struct.pack("<I", c.vout) + b"\x00" + seq for c in inputs)
            + varint(len(outputs)) + outs)
    raw = version + b"\x00\x01" + body + b"".join(witnesses) + locktime
    return raw, double_sha256(version + body + locktime)


def cache_dir(wallet_txs: int, background: int) -> Path:
    return CACHE / f"sidechain-{wallet_txs}-{background}"


def build(wallet_txs: int, background: int, blocks: int) -> Path:
    """The cached datadir (built now if missing); returns the cache directory."""
    out = cache_dir(wallet_txs, background)
    if (out / ".complete").exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    node = TestNode(0, tmp / "data", bindir(), NODE_ARGS, prune=False)
    started = time.monotonic()
    try:
        node.start()
        meta = _fill(node, wallet_txs, background, blocks)
        meta["build_s"] = round(time.monotonic() - started)
    finally:
        node.stop()
    for p in tmp.rglob("debug.log"):
        p.unlink()
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    (out / ".complete").touch()
    return out


def _fill(node: TestNode, wallet_txs: int, background: int, blocks: int) -> dict[str, Any]:
    rng = random.Random(7)
    funder = Key.of(hashlib.sha256(b"hearth bench funder").digest())
    seed = hmac.new(b"Bitcoin seed", b"hearth bench wallet", hashlib.sha512).digest()
    master, chain = seed[:32], seed[32:]
    receive, change = Branch(master, chain, 0), Branch(master, chain, 1)
    xpub = tpub(master, chain)
    descs = [node.getdescriptorinfo(f"wpkh({xpub}/{b}/*)")["descriptor"] for b in (0, 1)]
    funder_addr = script_to_address(funder.script, "regtest")
    sink_addr = script_to_address(b"\x00\x14" + bytes(20), "regtest")

    def mine(txs: list[bytes]) -> None:
        node.rpc("generateblock", sink_addr, [t.hex() for t in txs])

    # Coinbases to the funder, matured; then split into coins of 0.01 BTC.
    node.generatetoaddress(220, funder_addr)
    receives = wallet_txs * 3 // 4
    spends = wallet_txs - receives
    need = receives + background
    coins: list[Coin] = []
    height = 1
    split: list[bytes] = []
    while len(coins) < need:
        block = node.getblock(node.getblockhash(height), 2)
        cb = block["tx"][0]
        value = int(cb["vout"][0]["value"] * 100_000_000)
        per = min(1_000, (value - _FEE) // 1_000_000)
        raw, txid = sign_tx([Coin(bytes.fromhex(cb["txid"])[::-1], 0, value, funder)],
                            [(funder.script, 1_000_000)] * per
                            + [(funder.script, value - _FEE - per * 1_000_000)])
        coins += [Coin(txid, i, 1_000_000, funder) for i in range(per)]
        split.append(raw)
        height += 1
    for i in range(0, len(split), 20):
        mine(split[i:i + 20])
    print(f"{len(coins)} coins ready", file=sys.stderr)
    plan = ["r"] * receives + ["s"] * spends + ["b"] * background
    rng.shuffle(plan)
    per_block = len(plan) / blocks
    used_receive = 0
    next_change = 0
    wallet_coins: list[Coin] = []
    pending: list[bytes] = []
    fresh: list[Coin] = []
    for n, kind in enumerate(plan):
        if kind == "s" and not wallet_coins:
            kind = "r"  # nothing confirmed to spend yet
        if kind == "b":
            coin = coins.pop()
            outs = [(b"\x00\x14" + rng.randbytes(20), 400_000),
                    (b"\x00\x14" + rng.randbytes(20), coin.value - 400_000 - _FEE)]
            raw, _ = sign_tx([coin], outs)
        elif kind == "r":
            if used_receive and rng.random() < 1 / 3:
                key = receive.key(rng.randrange(used_receive))
            else:
                key = receive.key(used_receive)
                used_receive += 1
            coin = coins.pop()
            raw, txid = sign_tx([coin], [(key.script, coin.value - _FEE)])
            fresh.append(Coin(txid, 0, coin.value - _FEE, key))
        else:
            coin = wallet_coins.pop(rng.randrange(len(wallet_coins)))
            pay = coin.value // 2
            key = change.key(next_change)
            next_change += 1
            outs = [(b"\x00\x14" + rng.randbytes(20), pay), (key.script, coin.value - pay - _FEE)]
            raw, txid = sign_tx([coin], outs)
            if coin.value - pay - _FEE > 20_000:
                fresh.append(Coin(txid, 1, coin.value - pay - _FEE, key))
        pending.append(raw)
        if len(pending) >= per_block or n == len(plan) - 1:
            mine(pending)
            pending = []
            wallet_coins += fresh
            fresh = []
            if node.getblockcount() % 50 == 0:
                print(f"height {node.getblockcount()}: {n + 1} transactions", file=sys.stderr)
    node.generatetoaddress(1, sink_addr)
    return {"wallet_descriptors": descs, "wallet_txs": wallet_txs, "background": background,
            "receive_scripts": used_receive, "change_scripts": next_change,
            "height": node.getblockcount()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--wallet-txs", type=int, default=5_000)
    p.add_argument("--background", type=int, default=40_000)
    p.add_argument("--blocks", type=int, default=500)
    args = p.parse_args()
    print(build(args.wallet_txs, args.background, args.blocks))


if __name__ == "__main__":
    main()

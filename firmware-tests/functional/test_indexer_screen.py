"""The backfill's byte-level block screen against the full parse, on real regtest blocks.

Random wallets (subsets of the chain's own output scripts) are matched over a chain of
mixed transactions (every output type, spends of each, coinbases with a witness
commitment): screening the raw block and matching what it keeps must give the same
matches as parsing every transaction, block after block, spends of earlier outputs
included.
"""

from __future__ import annotations

import random

import pytest

from appliance.chain import parse_block
from appliance.indexer.matcher import TxMatch, iter_matches, outpoint
from appliance.indexer.screen import screen_block
from functional.framework.chaingen import MixedChain
from functional.framework.node import TestNode

__all__: list[str] = []

pytestmark = pytest.mark.node

BLOCKS = 25


def _summary(matches: list[TxMatch]) -> list[tuple[object, ...]]:
    return [(m.pos, m.tx.raw, [(f.vout, f.scripthash, f.value) for f in m.funding],
             [(s.prev_txid, s.prev_vout, s.scripthash) for s in m.spending]) for m in matches]


def test_screen_equals_full_parse_on_regtest_blocks(node: TestNode) -> None:
    hashes = MixedChain(node, seed=18).extend(BLOCKS, max_txs=8)
    raws = [bytes.fromhex(node.getblock(h, 0)) for h in hashes]
    blocks = [parse_block(raw) for raw in raws]
    every = sorted({o.script_pubkey for b in blocks for tx in b.txs for o in tx.outputs})
    rng = random.Random(18)
    compared = matched = spends = 0
    for share in (0.02, 0.1, 0.3, 1.0):
        wallet = {s for s in every if rng.random() < share}
        known: dict[bytes, tuple[bytes, int]] = {}
        funded: set[bytes] = set()
        for raw, block in zip(raws, blocks, strict=True):
            full = [m for m in iter_matches(block.txs, wallet.__contains__, known.get) if m]
            sb = screen_block(raw, wallet, funded)
            kept = [m for m in iter_matches(sb.txs, wallet.__contains__, known.get,
                                            sb.positions) if m]
            assert _summary(kept) == _summary(full)
            assert sb.txids == [t.txid for t in block.txs]
            assert sb.tree.root == block.header.merkle_root
            compared += len(block.txs)
            matched += len(full)
            spends += sum(1 for m in full if m.spending)
            for m in full:
                for f in m.funding:
                    known[outpoint(m.tx.txid, f.vout)] = (f.scripthash, f.value)
                    funded.add(m.tx.txid)
    # The comparison covered real work: matches, spends, and blocks the screen thinned.
    assert matched > 0 and spends > 0 and compared > matched

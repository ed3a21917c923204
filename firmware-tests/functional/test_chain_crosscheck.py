"""appliance.chain agrees with bitcoind on every block and transaction of a mixed chain."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import pytest

from appliance.chain import (
    classify_script,
    hash_to_hex_str,
    parse_block,
    script_to_address,
)
from functional.framework.chaingen import MixedChain
from functional.framework.node import TestNode

pytestmark = [pytest.mark.node, pytest.mark.slow]


def check_tx(tx: Any, expected: dict[str, Any], counts: Counter[str]) -> None:
    assert hash_to_hex_str(tx.txid) == expected["txid"]
    assert hash_to_hex_str(tx.wtxid) == expected["hash"]
    assert tx.size == expected["size"]
    assert tx.vsize == expected["vsize"]
    assert tx.weight == expected["weight"]
    assert tx.version == expected["version"]
    assert tx.locktime == expected["locktime"]
    assert len(tx.inputs) == len(expected["vin"])
    for txin, vin in zip(tx.inputs, expected["vin"], strict=True):
        assert txin.sequence == vin["sequence"]
        assert [w.hex() for w in txin.witness] == vin.get("txinwitness", [])
        if "coinbase" in vin:
            assert tx.is_coinbase and txin.script_sig.hex() == vin["coinbase"]
            counts["coinbase"] += 1
            continue
        assert hash_to_hex_str(txin.prev_hash) == vin["txid"]
        assert txin.prev_idx == vin["vout"]
        assert txin.script_sig.hex() == vin["scriptSig"]["hex"]
        counts["witness inputs" if txin.witness else "legacy inputs"] += 1
    assert len(tx.outputs) == len(expected["vout"])
    for txout, vout in zip(tx.outputs, expected["vout"], strict=True):
        assert txout.value == int(Decimal(vout["value"]) * 100_000_000)
        spk = vout["scriptPubKey"]
        assert txout.script_pubkey.hex() == spk["hex"]
        assert classify_script(txout.script_pubkey) == spk["type"]
        assert script_to_address(txout.script_pubkey, "regtest") == spk.get("address")
        counts[spk["type"]] += 1


def test_parser_agrees_with_bitcoind_on_every_transaction(node: TestNode) -> None:
    node.log("building a chain of mixed transactions")
    MixedChain(node, seed=7).extend(150, max_txs=8)
    counts: Counter[str] = Counter()
    txs = 0
    for height in range(node.getblockcount() + 1):
        block_hash = node.getblockhash(height)
        raw = bytes.fromhex(node.getblock(block_hash, 0))
        expected = node.getblock(block_hash, 2)
        block = parse_block(raw)  # verifies the merkle root against the txids
        assert hash_to_hex_str(block.hash) == expected["hash"]
        assert hash_to_hex_str(block.header.prev_hash) == expected.get(
            "previousblockhash", "00" * 32)
        assert hash_to_hex_str(block.header.merkle_root) == expected["merkleroot"]
        assert (block.header.version, block.header.timestamp, block.header.nonce) == (
            expected["version"], expected["time"], expected["nonce"])
        assert f"{block.header.bits:08x}" == expected["bits"]
        assert (block.size, block.stripped_size, block.weight) == (
            expected["size"], expected["strippedsize"], expected["weight"])
        assert len(block.txs) == len(expected["tx"])
        for tx, tx_expected in zip(block.txs, expected["tx"], strict=True):
            check_tx(tx, tx_expected, counts)
            txs += 1
    node.log(f"{txs} transactions checked: {counts}")
    # Every kind the appliance meets appeared, several times each.
    kinds = ("coinbase", "witness inputs", "legacy inputs", "pubkeyhash", "scripthash",
             "witness_v0_keyhash", "witness_v0_scripthash", "witness_v1_taproot", "nulldata")
    assert all(counts[k] >= 5 for k in kinds), counts
    assert txs > 700

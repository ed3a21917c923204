"""BIP158 filter matching against a real bitcoind's own filters (-blockfilterindex=1)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from appliance.indexer.bip158 import GCSFilter, ScriptSet
from functional.framework.chaingen import MixedChain
from functional.framework.node import TestNode
from functional.framework.util import wait_until

__all__: list[str] = []

pytestmark = pytest.mark.node

BLOCKS = 50
OP_RETURN = 0x6A


def _filter_index_synced(node: TestNode, height: int) -> bool:
    info = node.getindexinfo().get("basic block filter index", {})
    return bool(info.get("synced")) and int(info.get("best_block_height", -1)) >= height


def _block_scripts(block: dict[str, Any]) -> tuple[list[bytes], list[bytes]]:
    """(output scripts, spent prevout scripts) from ``getblock <hash> 3``."""
    outputs = [bytes.fromhex(o["scriptPubKey"]["hex"]) for tx in block["tx"] for o in tx["vout"]]
    prevouts = [bytes.fromhex(i["prevout"]["scriptPubKey"]["hex"])
                for tx in block["tx"] for i in tx["vin"] if "prevout" in i]
    return outputs, prevouts


def test_filters_match_every_script_of_real_blocks(node: TestNode,
                                                   timeout_factor: float) -> None:
    hashes = MixedChain(node, seed=158).extend(BLOCKS)
    tip = int(node.getblockcount())
    wait_until(lambda: _filter_index_synced(node, tip), timeout=60, factor=timeout_factor)

    rng = random.Random(158)
    strangers = ScriptSet(bytes.fromhex(rng.choice(("0014", "0020", "5120")))
                          + rng.randbytes(rng.choice((20, 32))) for _ in range(1000))
    false_positives = 0
    seen_spends = seen_op_return = 0
    for block_hash_hex in hashes:
        block_hash = bytes.fromhex(block_hash_hex)[::-1]  # RPC hex is the reversed hash
        f = GCSFilter.from_hex(block_hash, node.getblockfilter(block_hash_hex, "basic")["filter"])
        outputs, prevouts = _block_scripts(node.getblock(block_hash_hex, 3))
        seen_spends += len(prevouts)
        seen_op_return += sum(1 for s in outputs if s[:1] == bytes((OP_RETURN,)))

        elements = {s for s in outputs if s and s[0] != OP_RETURN} | {s for s in prevouts if s}
        # Same element rules as bitcoind: same count, and exactly the values it encoded.
        assert f.n == len(elements), block_hash_hex
        assert f.filter_elements() == sorted(f.hash_to_range(s) for s in elements)
        for script in elements:
            assert f.match_any([script]), (block_hash_hex, script.hex())
        assert f.match_set(outputs + prevouts) == elements
        assert f.match_any(ScriptSet(prevouts or outputs))
        false_positives += len(f.match_set(strangers))

    # The chain really exercised spends and OP_RETURN outputs.
    assert seen_spends > 0 and seen_op_return > 0
    # 50 blocks x 1000 strangers, each a false positive with probability ~1/784931.
    assert false_positives <= 3


def test_filter_key_is_the_internal_byte_order(node: TestNode, timeout_factor: float) -> None:
    tip_hash = MixedChain(node, seed=7).extend(2)[-1]
    tip = int(node.getblockcount())
    wait_until(lambda: _filter_index_synced(node, tip), timeout=60, factor=timeout_factor)
    filter_hex = node.getblockfilter(tip_hash, "basic")["filter"]
    outputs, prevouts = _block_scripts(node.getblock(tip_hash, 3))
    scripts = [s for s in outputs + prevouts if s and s[0] != OP_RETURN]
    assert GCSFilter.from_hex(bytes.fromhex(tip_hash)[::-1], filter_hex).match_set(scripts) == (
        set(scripts))
    # Keyed by the hash as the RPC prints it, bitcoind's filter matches nothing of its block.
    assert not GCSFilter.from_hex(bytes.fromhex(tip_hash), filter_hex).match_any(scripts)

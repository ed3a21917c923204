"""The test node itself: prunes for real, publishes ZMQ, reorgs."""

from __future__ import annotations

import pytest

from functional.framework.node import TestNode

pytestmark = pytest.mark.node


def test_node_starts_from_cached_chain_with_wallet(node: TestNode) -> None:
    assert node.getblockcount() == 200
    assert node.w("getbalance") > 0
    info = node.getblockchaininfo()
    assert info["chain"] == "regtest" and info["pruned"] is True


def test_node_prunes_for_real(node: TestNode) -> None:
    # bitcoind never prunes the last 288 blocks, and -fastprune files hold ~250 tiny
    # blocks: mine past both so pruning really deletes a file.
    node.mine(400)
    pruned_to = node.prune_to(300)
    assert pruned_to > 0
    info = node.getblockchaininfo()
    assert info["pruneheight"] > 0
    with pytest.raises(Exception, match="pruned"):
        node.getblock(node.getblockhash(1))


def test_node_reorg_replaces_tip(node: TestNode) -> None:
    old_tip = node.getbestblockhash()
    node.reorg(3)
    assert node.getblockcount() == 201
    assert node.getbestblockhash() != old_tip
    tips = {t["status"] for t in node.getchaintips()}
    assert "invalid" in tips

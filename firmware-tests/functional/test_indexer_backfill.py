"""A wallet registered after its history was pruned: BIP158 filters + getblockfrompeer."""

from __future__ import annotations

from pathlib import Path

import pytest

from functional.framework.appliance import IndexerProcess
from functional.framework.node import NodeFactory
from functional.framework.truth import Truth
from functional.framework.util import wait_until
from functional.test_indexer_wallet import (
    compare,
    derive_scripts,
    electrum_total,
    fund,
    wallet_total,
    watch_wallet,
)

pytestmark = [pytest.mark.node, pytest.mark.slow]


def test_backfill_after_300_pruned_blocks(tmp_path: Path, node_factory: NodeFactory,
                                          timeout_factor: float) -> None:
    node = node_factory.create()
    archive = node_factory.create(prune=False)  # an unpruned peer that serves old blocks
    node_factory.connect(node, archive)
    indexer = IndexerProcess(tmp_path / "appliance", node, timeout_factor=timeout_factor)
    indexer.start()
    try:
        birthday = node.getblockcount()
        descs, _ = watch_wallet(node, "late")
        # History: receives, a spend from the wallet and change, over several blocks.
        for amounts in (["1", "0.5"], ["0.25"], ["2"]):
            fund(node, "late", amounts)
            node.mine(1)
        node.rpc("send", {node.new_address(): "1.1"}, wallet="late")
        node.mine(1)
        truth = Truth(node, derive_scripts(node, descs, 40))
        node.mine(700)
        truth.update()  # ground truth while bitcoind still has the blocks
        wait_until(lambda: archive.getblockcount() == node.getblockcount())
        pruned_to = node.prune_to(node.getblockcount() - 288)
        assert pruned_to >= birthday + 300, pruned_to
        # A payment that arrives while the backfill runs.
        indexer.wallet_add(*descs, birthday=birthday)
        fund(node, "late", ["0.3"])
        node.mine(1)
        truth.update()
        indexer.wait_synced(timeout=180)
        client = indexer.client()
        compare(client, truth)
        assert electrum_total(client, truth) == wallet_total(node, "late")
        assert "fetching it from a peer" in indexer.log_text()
        # The proofs came from blocks bitcoind had pruned.
        first = min((h for v in truth.electrum_view().values() for h in v["history"]),
                    key=lambda h: h["height"])
        proof = client.call("blockchain.transaction.get_merkle", first["tx_hash"],
                            first["height"])
        assert proof["block_height"] == first["height"] <= pruned_to
    finally:
        indexer.stop()


def test_busy_wallet_backfills_from_blocks_without_filters(tmp_path: Path,
                                                           node_factory: NodeFactory,
                                                           timeout_factor: float) -> None:
    """A payment in every block: filters rule out nothing, so after the first batch the
    backfill reads the (kept) blocks directly. A quiet stretch follows, then more
    payments: the history is bitcoind's either way, spends and change included."""
    node = node_factory.create(prune=False)
    indexer = IndexerProcess(tmp_path / "appliance", node, timeout_factor=timeout_factor)
    indexer.start()
    try:
        descs, _ = watch_wallet(node, "busy")
        birthday = node.getblockcount() + 1
        for i in range(45):
            fund(node, "busy", ["0.2"])
            if i % 10 == 9:  # a spend (with change) now and then
                node.rpc("send", {node.new_address(): "0.3"}, wallet="busy")
            node.mine(1)
        node.mine(30)  # quiet
        for _ in range(5):
            fund(node, "busy", ["0.1"])
            node.mine(1)
        truth = Truth(node, derive_scripts(node, descs, 80))
        indexer.wallet_add(*descs, birthday=birthday)
        indexer.wait_synced(timeout=180)
        client = indexer.client()
        compare(client, truth)
        assert electrum_total(client, truth) == wallet_total(node, "busy")
        assert "filters rule out no block lately" in indexer.log_text()
    finally:
        indexer.stop()

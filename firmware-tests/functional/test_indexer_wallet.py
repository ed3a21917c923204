"""The indexer against ground truth: a wallet's history, balance and UTXOs per script,
through receive, spend, unconfirmed, RBF, reorg and pruning."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from functional.framework.appliance import ElectrumClient, IndexerProcess, scripthash_of
from functional.framework.node import TestNode
from functional.framework.truth import Truth
from functional.framework.util import wait_until

pytestmark = pytest.mark.node


def watch_wallet(node: TestNode, name: str = "w1") -> tuple[list[str], list[str]]:
    """A bitcoind wallet to be watched: its public descriptors and its scripts."""
    node.createwallet(name)
    descs = node.rpc("listdescriptors", wallet=name)["descriptors"]
    public = [d["desc"] for d in descs if d["desc"].startswith("wpkh(")]
    return public, []


def derive_scripts(node: TestNode, descriptors: list[str], count: int) -> set[str]:
    scripts = set()
    for desc in descriptors:
        for addr in node.deriveaddresses(desc, [0, count - 1]):
            scripts.add(node.validateaddress(addr)["scriptPubKey"])
    return scripts


def compare(client: ElectrumClient, truth: Truth) -> None:
    view = truth.electrum_view()
    for script, want in view.items():
        sh = scripthash_of(script)
        history = client.call("blockchain.scripthash.get_history", sh)
        assert history == want["history"], script
        unspent = client.call("blockchain.scripthash.listunspent", sh)
        assert sorted(unspent, key=lambda u: (u["tx_hash"], u["tx_pos"])) == sorted(
            want["unspent"].values(), key=lambda u: (u["tx_hash"], u["tx_pos"])), script
        balance = client.call("blockchain.scripthash.get_balance", sh)
        assert balance == {"confirmed": want["confirmed"],
                           "unconfirmed": want["unconfirmed"]}, script


def wallet_total(node: TestNode, wallet: str) -> int:
    b = node.rpc("getbalances", wallet=wallet)["mine"]
    return int((Decimal(b["trusted"]) + Decimal(b["untrusted_pending"])) * 100_000_000)


def electrum_total(client: ElectrumClient, truth: Truth) -> int:
    total = 0
    for script in truth.scripts:
        bal = client.call("blockchain.scripthash.get_balance", scripthash_of(script))
        total += bal["confirmed"] + bal["unconfirmed"]
    return total


@pytest.fixture
def indexer(tmp_path: Path, node: TestNode, timeout_factor: float) -> Any:
    proc = IndexerProcess(tmp_path / "appliance", node, timeout_factor=timeout_factor)
    proc.start()
    yield proc
    proc.stop()


def test_live_wallet_matches_ground_truth(node: TestNode, indexer: IndexerProcess) -> None:
    descs, _ = watch_wallet(node)
    wid = indexer.wallet_add(*descs)
    indexer.wait_synced()
    scripts = derive_scripts(node, descs, 40)
    truth = Truth(node, scripts)
    client = indexer.client()
    # receive, confirm
    for _ in range(3):
        node.send(node.rpc("getnewaddress", wallet="w1"), "1.5")
    node.mine(1)
    indexer.wait_synced()
    compare(client, truth)
    # unconfirmed receive and a spend from w1 (a tx whose inputs are ours)
    node.send(node.rpc("getnewaddress", wallet="w1"), "0.7")
    node.rpc("send", {node.new_address(): "2"}, wallet="w1")
    wait_until(lambda: len(truth.mempool()) == 2)
    wait_until(lambda: electrum_total(client, truth) == wallet_total(node, "w1"))
    compare(client, truth)
    node.mine(1)
    indexer.wait_synced()
    compare(client, truth)
    assert electrum_total(client, truth) == wallet_total(node, "w1")
    assert indexer.wallets()[0]["id"] == wid

"""End to end: Debian's Electrum wallet, pointed at the box, sees what bitcoind's own
wallet sees, through receive, spend, mempool, RBF, a 3-block reorg, pruning, TLS, and
for a wallet registered after 300+ blocks of its history were pruned."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from functional.framework.appliance import IndexerProcess
from functional.framework.electrum_wallet import ElectrumWallet, electrum_available, vpub_of
from functional.framework.node import NodeFactory, RPCError, TestNode
from functional.framework.util import wait_until

pytestmark = [pytest.mark.node, pytest.mark.slow,
              pytest.mark.skipif(not electrum_available(),
                                 reason="Debian's electrum is installed by ./build.sh test")]


def account_tpub(node: TestNode, wallet: str) -> str:
    return node.account_xpub(wallet)


def core_view(node: TestNode, wallet: str) -> tuple[int, set[tuple[str, int]],
                                                     set[tuple[str, int, int]]]:
    """bitcoind's wallet as Electrum should show it: total, history, UTXOs."""
    b = node.rpc("getbalances", wallet=wallet)["mine"]
    total = int((Decimal(b["trusted"]) + Decimal(b["untrusted_pending"])) * 100_000_000)
    mempool = set(node.getrawmempool())
    history = set()
    for t in node.rpc("listtransactions", "*", 10_000, 0, True, wallet=wallet):
        if t.get("confirmations", 0) > 0:
            history.add((t["txid"], int(t["blockheight"])))
        elif t["txid"] in mempool:
            history.add((t["txid"], 0))
    utxos = {(u["txid"], int(u["vout"]), int(Decimal(u["amount"]) * 100_000_000))
             for u in node.rpc("listunspent", 0, wallet=wallet)}
    return total, history, utxos


def assert_same(ew: ElectrumWallet, node: TestNode, wallet: str, timeout: float = 60) -> None:
    want = core_view(node, wallet)
    height = node.getblockcount()

    def same() -> bool:
        return ew.synced_to(height) and (ew.total(), ew.history(), ew.utxos()) == want
    try:
        wait_until(same, timeout=timeout, interval=0.5)
    except AssertionError:
        got = (ew.total(), ew.history(), ew.utxos())
        raise AssertionError(f"electrum {got}\n!= bitcoind {want}") from None


def bank(node: TestNode) -> str:
    """A funding wallet whose coins are not fresh coinbases: a reorg then returns its
    payments to the mempool instead of evicting them (immature coinbase spends)."""
    node.createwallet("bank")
    for _ in range(4):
        node.send(node.rpc("getnewaddress", wallet="bank"), "10")
    node.mine(6)
    return "bank"


def pay(node: TestNode, source: str, wallet: str, amount: str) -> str:
    return str(node.rpc("send", {node.rpc("getnewaddress", wallet=wallet): amount},
                        wallet=source)["txid"])


def rebroadcast(node: TestNode, wallets: list[str]) -> int:
    """What a wallet does after a reorg: send again its transactions that fell out of
    the mempool (wallet txs carry anti-fee-sniping locktimes, so a reorg makes them
    non-final and bitcoind evicts them). Parents first: retry until nothing changes."""
    sent = 0
    while True:
        progress = False
        mempool = set(node.getrawmempool())
        for wallet in wallets:
            for t in node.rpc("listtransactions", "*", 10_000, 0, True, wallet=wallet):
                if t.get("confirmations", 0) != 0 or t["txid"] in mempool \
                        or t.get("replaced_by_txid"):
                    continue
                raw = node.rpc("gettransaction", t["txid"], wallet=wallet)["hex"]
                try:
                    node.sendrawtransaction(raw)
                except RPCError:
                    continue
                mempool.add(t["txid"])
                sent += 1
                progress = True
        if not progress:
            return sent


def test_electrum_wallet_sees_what_bitcoind_sees(tmp_path: Path, node: TestNode,
                                                 timeout_factor: float) -> None:
    source = bank(node)
    indexer = IndexerProcess(tmp_path / "appliance", node, timeout_factor=timeout_factor)
    indexer.start()
    node.createwallet("w1")
    vpub = vpub_of(account_tpub(node, "w1"))
    indexer.wallet_add(vpub)
    ew = ElectrumWallet(tmp_path / "electrum", vpub)
    try:
        ew.start(f"127.0.0.1:{indexer.tcp_port}:t")
        # receive
        for amount in ("1", "0.5", "2.25"):
            pay(node, source, "w1", amount)
        node.mine(1)
        assert_same(ew, node, "w1")
        # spend, leaving an unconfirmed spend with change
        node.rpc("send", {node.new_address(): "1.1"}, None, "unset", None,
                 {"replaceable": True}, wallet="w1")
        assert_same(ew, node, "w1")
        # an unconfirmed receive, and an RBF replacement of the spend
        pay(node, source, "w1", "0.3")
        spend = next(t["txid"] for t in node.rpc("listtransactions", wallet="w1")
                     if t["category"] == "send")
        node.rpc("bumpfee", spend, wallet="w1")
        assert_same(ew, node, "w1")
        node.mine(1)
        assert_same(ew, node, "w1")
        # a 3-block reorg that moves the wallet's transactions to other blocks
        pay(node, source, "w1", "0.2")
        node.mine(1)
        assert_same(ew, node, "w1")
        before = {txid: h for txid, h in ew.history()}
        node.reorg(3, extra=1)
        # Electrum keeps the evicted txs as "local" until they are seen again.
        wait_until(lambda: ew.synced_to(node.getblockcount())
                   and any(h == -2 for _, h in ew.history()), timeout=60)
        assert rebroadcast(node, ["bank", "w1"]) > 0
        assert_same(ew, node, "w1")
        node.mine(1)
        assert_same(ew, node, "w1")
        moved = {txid for txid, h in ew.history() if before.get(txid) != h}
        assert moved, "the reorg should have moved wallet transactions to new blocks"
        # pruning: the blocks are gone from bitcoind; a fresh Electrum still verifies
        node.mine(400)
        node.prune_to(node.getblockcount() - 300)
        assert node.getblockchaininfo()["pruneheight"] > 205
        ew.stop()
        fresh = ElectrumWallet(tmp_path / "electrum-fresh", vpub)
        try:
            fresh.start(f"127.0.0.1:{indexer.tls_port}:s")  # and over TLS this time
            assert_same(fresh, node, "w1", timeout=120)
        finally:
            fresh.stop()
    finally:
        ew.stop()
        indexer.stop()


def test_electrum_wallet_registered_after_pruning(tmp_path: Path, node_factory: NodeFactory,
                                                  timeout_factor: float) -> None:
    node = node_factory.create()
    archive = node_factory.create(prune=False)
    node_factory.connect(node, archive)
    node.createwallet("late")
    for amount in ("1", "0.4"):
        node.send(node.rpc("getnewaddress", wallet="late"), amount)
        node.mine(1)
    node.rpc("send", {node.new_address(): "0.9"}, wallet="late")
    node.mine(1)
    birthday = node.getblockcount() - 3
    node.mine(700)
    wait_until(lambda: archive.getblockcount() == node.getblockcount())
    assert node.prune_to(node.getblockcount() - 288) >= birthday + 300
    indexer = IndexerProcess(tmp_path / "appliance", node, timeout_factor=timeout_factor)
    indexer.start()
    vpub = vpub_of(account_tpub(node, "late"))
    indexer.cli("wallet", "add", vpub, "--birthday", str(birthday))
    ew = ElectrumWallet(tmp_path / "electrum", vpub)
    try:
        ew.start(f"127.0.0.1:{indexer.tcp_port}:t")
        assert_same(ew, node, "late", timeout=120)
    finally:
        ew.stop()
        indexer.stop()

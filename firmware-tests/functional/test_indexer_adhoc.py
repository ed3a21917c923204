"""Watch on subscribe: a script no wallet derives (a Lightning channel's funding 2-of-2)
becomes watched when a client subscribes to it, with what it had just before (recent
blocks, the mempool), and stays watched across a restart."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from functional.framework.appliance import ElectrumClient, IndexerProcess, scripthash_of
from functional.framework.node import TestNode
from functional.framework.util import wait_until

pytestmark = pytest.mark.node


def truth(node: TestNode, address: str, txids: list[str]) -> list[dict[str, Any]]:
    """The Electrum history of ``address`` from bitcoind, for the given txids."""
    out = []
    for txid in txids:
        info = node.w("gettransaction", txid)
        height = info["blockheight"] if info.get("blockheight") else 0
        out.append((height, txid))
    confirmed = sorted(((h, t) for h, t in out if h > 0),
                       key=lambda ht: (ht[0], node.w("gettransaction", ht[1])["blockindex"]))
    mempool = sorted(t for h, t in out if h == 0)
    return ([{"tx_hash": t, "height": h} for h, t in confirmed]
            + [{"tx_hash": t, "height": 0, "fee": _fee(node, t)} for t in mempool])


def _fee(node: TestNode, txid: str) -> int:
    return int(Decimal(node.rpc("getmempoolentry", txid)["fees"]["base"]) * 100_000_000)


def spend_outpoint(node: TestNode, txid: str, vout: int, to: str) -> str:
    """Spend exactly one outpoint of the "foreign" wallet (a "channel close")."""
    value = Decimal(str(node.rpc("gettxout", txid, vout, True)["value"]))
    raw = node.rpc("createrawtransaction", [{"txid": txid, "vout": vout}],
                   [{to: str(value - Decimal("0.0001"))}])
    signed = node.rpc("signrawtransactionwithwallet", raw, wallet="foreign")
    txid2: str = node.rpc("sendrawtransaction", signed["hex"])
    return txid2


def vout_to(node: TestNode, txid: str, address: str) -> int:
    tx = node.rpc("decoderawtransaction", node.w("gettransaction", txid)["hex"])
    return int(next(o["n"] for o in tx["vout"] if o["scriptPubKey"].get("address") == address))


def test_subscribing_watches_a_foreign_script(node: TestNode, indexer: IndexerProcess) -> None:
    # A script of another bitcoind wallet, never registered with the box (and so not
    # spent by the default wallet's own coin selection).
    node.createwallet("foreign")
    address = node.rpc("getnewaddress", wallet="foreign")
    sh = scripthash_of(node.validateaddress(address)["scriptPubKey"])
    other = node.validateaddress(node.new_address())["scriptPubKey"]
    confirmed = node.send(address, "0.5")
    node.mine(1)  # confirmed just before anyone subscribed
    unconfirmed = node.send(address, "0.25")  # in the mempool at subscription time
    wait_until(lambda: indexer.status()["indexer"]["height"] == node.getblockcount())

    watcher = indexer.client()
    # The answer is the one any unknown script gets, word for word.
    stranger = indexer.client()
    assert stranger.call("blockchain.scripthash.get_history", scripthash_of(other)) == []
    assert watcher.call("blockchain.scripthash.subscribe", sh) is None
    # Then what it had just before arrives as a notification.
    note = watcher.wait_notification("blockchain.scripthash.subscribe")
    assert note["params"][0] == sh and note["params"][1] is not None
    assert watcher.call("blockchain.scripthash.get_history", sh) == truth(
        node, address, [confirmed, unconfirmed])
    utxos = watcher.call("blockchain.scripthash.listunspent", sh)
    assert {(u["tx_hash"], u["height"]) for u in utxos} == {
        (confirmed, node.getblockcount()), (unconfirmed, 0)}
    status = indexer.status()["indexer"]
    assert status["adhoc_scripts"] == 1 and status["adhoc_catchups"] >= 1

    # From now on it is watched like a wallet's script: a spend (the "close")...
    close = spend_outpoint(node, confirmed, vout_to(node, confirmed, address), node.new_address())
    note = watcher.wait_notification("blockchain.scripthash.subscribe")
    assert watcher.call("blockchain.scripthash.get_history", sh) == truth(
        node, address, [confirmed, unconfirmed, close])
    node.mine(1)
    watcher.wait_notification("blockchain.scripthash.subscribe")
    assert watcher.call("blockchain.scripthash.get_history", sh) == truth(
        node, address, [confirmed, unconfirmed, close])
    assert watcher.call("blockchain.scripthash.get_balance", sh) == {
        "confirmed": 25_000_000, "unconfirmed": 0}
    tip = node.getblockcount()
    proof = watcher.call("blockchain.transaction.get_merkle", close, tip)
    assert proof["block_height"] == tip

    # ...and stays watched across a restart, even with nobody subscribed.
    indexer.stop()
    later = node.send(address, "0.1")
    node.mine(1)
    indexer.start()
    client = indexer.client()
    wait_until(lambda: any(h["tx_hash"] == later for h in client.call(
        "blockchain.scripthash.get_history", sh)))
    assert client.call("blockchain.scripthash.get_history", sh) == truth(
        node, address, [confirmed, unconfirmed, close, later])


def test_funding_broadcast_after_the_subscription(node: TestNode,
                                                  indexer: IndexerProcess) -> None:
    """The usual Lightning order: the peer subscribes, then the funding tx appears."""
    address = node.new_address("bech32")
    sh = scripthash_of(node.validateaddress(address)["scriptPubKey"])
    client: ElectrumClient = indexer.client()
    assert client.call("blockchain.scripthash.subscribe", sh) is None
    wait_until(lambda: indexer.status()["indexer"]["adhoc_catchups"] >= 1)
    assert client.call("blockchain.scripthash.get_history", sh) == []
    funding = node.send(address, "0.15")
    client.wait_notification("blockchain.scripthash.subscribe")
    assert client.call("blockchain.scripthash.get_mempool", sh)[0]["tx_hash"] == funding
    node.mine(3)
    wait_until(lambda: client.call("blockchain.scripthash.get_history", sh) == [
        {"tx_hash": funding, "height": node.getblockcount() - 2}])


def test_a_mempool_spend_older_than_the_ring_is_found(node: TestNode,
                                                      indexer: IndexerProcess) -> None:
    """The spend of a just-confirmed output arrived while the box was down (so it is in
    no ring of recent transactions): bitcoind names it by outpoint."""
    node.createwallet("foreign")
    address = node.rpc("getnewaddress", wallet="foreign")
    sh = scripthash_of(node.validateaddress(address)["scriptPubKey"])
    funding = node.send(address, "0.5")
    node.mine(1)
    indexer.stop()
    close = spend_outpoint(node, funding, vout_to(node, funding, address), node.new_address())
    indexer.start()
    client = indexer.client()
    assert client.call("blockchain.scripthash.subscribe", sh) is None
    client.wait_notification("blockchain.scripthash.subscribe")
    assert client.call("blockchain.scripthash.get_history", sh) == truth(
        node, address, [funding, close])
    assert client.call("blockchain.scripthash.listunspent", sh) == []
    assert client.call("blockchain.scripthash.get_balance", sh) == {
        "confirmed": 50_000_000, "unconfirmed": -50_000_000}

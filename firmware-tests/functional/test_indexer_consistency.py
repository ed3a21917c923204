"""What a client is answered while the index changes under it (issue 18): scripts past
the gap answered right the first time, gap jobs that never empty the mempool slice and
cost the same however many other wallets the box has, and a status that always matches
the history served."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import pytest

from functional.framework.appliance import IndexerProcess, scripthash_of
from functional.framework.node import TestNode
from functional.framework.util import wait_until

pytestmark = pytest.mark.node


@pytest.fixture
def indexer(tmp_path: Path, node: TestNode, timeout_factor: float) -> Any:
    proc = IndexerProcess(tmp_path / "appliance", node, timeout_factor=timeout_factor)
    proc.start()
    yield proc
    proc.stop()


def add_wallet(node: TestNode, indexer: IndexerProcess, name: str) -> tuple[str, str]:
    """A fresh bitcoind wallet, registered: (receive descriptor, wallet id)."""
    node.createwallet(name)
    descs = [d["desc"] for d in node.rpc("listdescriptors", wallet=name)["descriptors"]
             if d["desc"].startswith("wpkh(")]
    wid = indexer.wallet_add(*descs)
    receive = next(d for d in descs if "/0/*" in d)
    return receive, wid


def sh_at(node: TestNode, desc: str, index: int) -> tuple[str, str]:
    address = node.deriveaddresses(desc, [index, index])[0]
    return address, scripthash_of(node.validateaddress(address)["scriptPubKey"])


def status_of(history: list[dict[str, Any]]) -> str | None:
    text = "".join(f"{h['tx_hash']}:{h['height']}:" for h in history)
    return hashlib.sha256(text.encode()).hexdigest() if text else None


def rpc_calls(node: TestNode, methods: tuple[str, ...], since: int) -> dict[str, int]:
    """bitcoind's RPC calls logged (-debug=rpc) after byte offset ``since``."""
    text = (node.regtest_dir / "debug.log").read_bytes()[since:].decode(errors="replace")
    return {m: text.count(f"method={m} ") for m in methods}


def test_first_query_past_the_gap_has_the_confirmed_payment(node: TestNode,
                                                            indexer: IndexerProcess) -> None:
    receive, _ = add_wallet(node, indexer, "w1")
    indexer.wait_synced()
    client = indexer.client()
    paid = {}
    # 0 is watched; once it is used the box watches 0..20, and the others are past that
    # gap (44 only within reach of a client once 25 has been asked for).
    for index in (0, 25, 39, 44):
        address, sh = sh_at(node, receive, index)
        paid[sh] = node.send(address, "0.1")
    node.mine(1)
    indexer.wait_synced()
    height = node.getblockcount()
    for sh, txid in paid.items():
        # The very first question about the script: no retry, no notification needed.
        assert client.call("blockchain.scripthash.get_history", sh) == [
            {"tx_hash": txid, "height": height}]
        assert client.call("blockchain.scripthash.get_balance", sh) == {
            "confirmed": 10_000_000, "unconfirmed": 0}


def test_no_empty_answer_while_60_gap_scripts_are_queried(node: TestNode,
                                                         indexer: IndexerProcess) -> None:
    receive, _ = add_wallet(node, indexer, "w1")
    indexer.wait_synced()
    address, sh = sh_at(node, receive, 0)
    txid = node.send(address, "0.2")
    poller = indexer.client()
    wait_until(lambda: poller.call("blockchain.scripthash.get_history", sh) != [])
    answers: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            answers.append(len(poller.call("blockchain.scripthash.get_history", sh)))

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        other = indexer.client()
        for index in range(22, 82):  # a wallet scanning with a stop gap of 60
            other.call("blockchain.scripthash.get_history", sh_at(node, receive, index)[1])
    finally:
        stop.set()
        thread.join()
    assert answers and all(n == 1 for n in answers), (len(answers), answers.count(0))
    assert poller.call("blockchain.scripthash.get_history", sh) == [
        {"tx_hash": txid, "height": 0, "fee": poller.call(
            "blockchain.scripthash.get_mempool", sh)[0]["fee"]}]


def test_gap_job_cost_is_flat_in_the_number_of_other_wallets(
        node: TestNode, indexer: IndexerProcess) -> None:
    """Counted in bitcoind's RPC log, not timed: a job asks bitcoind the same whether the
    box holds one wallet or eleven (it used to reload and re-derive every wallet)."""
    receive, _ = add_wallet(node, indexer, "w0")
    indexer.wait_synced()
    client = indexer.client()
    methods = ("deriveaddresses", "getblockfilter", "getrawmempool", "scantxoutset")

    def job_calls(index: int) -> dict[str, int]:
        log = node.regtest_dir / "debug.log"
        since = log.stat().st_size
        client.call("blockchain.scripthash.get_history", sh_at(node, receive, index)[1])
        wait_until(lambda: all(w["jobs"] == [] for w in indexer.wallets()))
        return rpc_calls(node, methods, since)

    alone = job_calls(25)
    for n in range(1, 11):
        add_wallet(node, indexer, f"w{n}")
    indexer.wait_synced()
    crowded = job_calls(30)
    assert alone == crowded, (alone, crowded)
    assert alone["getrawmempool"] <= 1  # the slice topped up once, not rebuilt per wallet


def test_status_matches_history_while_the_mempool_churns(node: TestNode,
                                                         indexer: IndexerProcess) -> None:
    """Transactions enter (payments, replacements) and leave (replaced, mined) as fast as
    bitcoind takes them; every status a client is sent or answered must be the status
    of a history it can be served, and at rest they agree with bitcoind."""
    receive, _ = add_wallet(node, indexer, "w1")
    indexer.wait_synced()
    addresses = [sh_at(node, receive, i) for i in range(1, 9)]
    sub = indexer.client()
    for _, sh in addresses:  # notified all along (exercises the notifier meanwhile)
        sub.call("blockchain.scripthash.subscribe", sh)
    reader = indexer.client()
    # (scripthash, status answered, how many notifications the reader had before it asked)
    mismatches: list[tuple[str, str, int]] = []
    stop = threading.Event()

    def read() -> None:
        # A status answered by subscribe and the history right after it: when they
        # differ, the state changed in between (a replacement leaves the pool a moment
        # before its successor enters), so a notification for it must follow.
        while not stop.is_set():
            for _, sh in addresses:
                before = len(reader.notifications)
                status = reader.call("blockchain.scripthash.subscribe", sh)
                history = reader.call("blockchain.scripthash.get_history", sh)
                if status is not None and history == []:
                    mismatches.append((sh, status, before))

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for round_ in range(3):
            for i, (address, _) in enumerate(addresses):
                txid = node.rpc("send", {address: f"0.0{i + 1}"}, None, "unset", None,
                                {"replaceable": True}, wallet=node.wallet)["txid"]
                if i % 2 == 0:  # replaced: leaves the mempool, its successor enters
                    node.rpc("bumpfee", txid, wallet=node.wallet)
            if round_ == 1:
                node.mine(1)  # the rest leaves the mempool into a block
    finally:
        stop.set()
        thread.join()
    wait_until(lambda: node.getblockcount() == indexer.status()["indexer"]["height"])
    reader.call("server.ping")  # reads what was sent meanwhile
    seen = list(reader.notifications)
    unexplained = [(sh, status) for sh, status, before in mismatches
                   if not any(n["params"][0] == sh for n in seen[before:])]
    assert unexplained == [], (len(mismatches), unexplained)

    final = indexer.client()

    def settled() -> bool:
        return all(final.call("blockchain.scripthash.subscribe", sh) == status_of(
            final.call("blockchain.scripthash.get_history", sh)) for _, sh in addresses)

    wait_until(settled, timeout=60)
    for address, sh in addresses:
        pool = set(node.getrawmempool())
        history = reader.call("blockchain.scripthash.get_history", sh)
        received = node.rpc("listreceivedbyaddress", 0, True, True, address, wallet="w1")
        # The receiving wallet still lists replaced payments: keep mined or pooled ones.
        mine = {t for t in (received[0]["txids"] if received else []) if t in pool
                or node.rpc("gettransaction", t, wallet="w1")["confirmations"] > 0}
        assert {h["tx_hash"] for h in history} == mine
        assert {h["tx_hash"] for h in history if h["height"] <= 0} == mine & pool


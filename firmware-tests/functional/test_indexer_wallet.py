"""The indexer against ground truth: a wallet's history, balance and UTXOs per script,
through receive, spend, unconfirmed, RBF, reorg and pruning."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from functional.framework.appliance import (
    ElectrumClient,
    ElectrumError,
    IndexerProcess,
    scripthash_of,
)
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


def setup_watched(node: TestNode, indexer: IndexerProcess, name: str = "w1",
                  birthday: int | None = None) -> tuple[ElectrumClient, Truth, str]:
    descs, _ = watch_wallet(node, name)
    wid = indexer.wallet_add(*descs, *([] if birthday is None else []))
    indexer.wait_synced()
    return indexer.client(), Truth(node, derive_scripts(node, descs, 40)), wid


def fund(node: TestNode, wallet: str, amounts: list[str]) -> list[str]:
    return [node.send(node.rpc("getnewaddress", wallet=wallet), a) for a in amounts]


def test_rbf_replacement_replaces_the_mempool_entry(node: TestNode,
                                                   indexer: IndexerProcess) -> None:
    client, truth, _ = setup_watched(node, indexer)
    fund(node, "w1", ["1", "1"])
    node.mine(1)
    indexer.wait_synced()
    first = node.rpc("send", {node.new_address(): "1.2"}, None, "unset", None,
                     {"replaceable": True}, wallet="w1")["txid"]
    wait_until(lambda: electrum_total(client, truth) == wallet_total(node, "w1"))
    compare(client, truth)
    bumped = node.rpc("bumpfee", first, wallet="w1")["txid"]
    assert bumped != first
    wait_until(lambda: electrum_total(client, truth) == wallet_total(node, "w1"))
    wait_until(lambda: all(h["tx_hash"] != first for s in truth.scripts
                           for h in client.call("blockchain.scripthash.get_history",
                                                scripthash_of(s))))
    compare(client, truth)
    node.mine(1)
    indexer.wait_synced()
    compare(client, truth)


def test_three_block_reorg_with_a_double_spend(node: TestNode, indexer: IndexerProcess) -> None:
    client, truth, _ = setup_watched(node, indexer)
    fund(node, "w1", ["3"])
    node.mine(1)
    # Three blocks holding wallet transactions, the last one a spend from w1.
    fund(node, "w1", ["0.5"])
    node.mine(1)
    fund(node, "w1", ["0.25"])
    node.mine(1)
    spend = node.rpc("send", {node.new_address(): "1"}, None, "unset", None,
                     {"replaceable": True}, wallet="w1")["txid"]
    node.mine(1)
    indexer.wait_synced()
    compare(client, truth)
    # Reorg: drop the three blocks; the spend is replaced before new blocks are mined.
    height = node.getblockcount()
    node.invalidateblock(node.getblockhash(height - 2))
    replacement = node.rpc("bumpfee", spend, wallet="w1")["txid"]
    node.mine(4, node.new_address("bech32m"))
    indexer.wait_synced()
    compare(client, truth)
    histories = [h["tx_hash"] for s in truth.scripts
                 for h in client.call("blockchain.scripthash.get_history", scripthash_of(s))]
    assert spend not in histories and replacement in histories
    assert indexer.status()["indexer"]["reorgs"] >= 1 or "reorg" in indexer.log_text()
    assert electrum_total(client, truth) == wallet_total(node, "w1")


def test_history_survives_pruning_and_restart(node: TestNode, indexer: IndexerProcess) -> None:
    client, truth, _ = setup_watched(node, indexer)
    fund(node, "w1", ["1", "2"])
    node.mine(1)
    node.rpc("send", {node.new_address(): "0.5"}, wallet="w1")
    node.mine(1)
    indexer.wait_synced()
    before = truth.electrum_view()  # ground truth read while the blocks still exist
    proof_tx = next(h for v in before.values() for h in v["history"])
    node.mine(400)
    truth.update()  # read the blocks before they go
    assert node.prune_to(node.getblockcount() - 300) > proof_tx["height"]
    indexer.wait_synced(timeout=120)
    compare(client, truth)  # truth keeps what it learnt; bitcoind no longer has the blocks
    merkle = client.call("blockchain.transaction.get_merkle", proof_tx["tx_hash"],
                         proof_tx["height"])
    assert merkle["block_height"] == proof_tx["height"]
    raw = client.call("blockchain.transaction.get", proof_tx["tx_hash"])
    assert node.decoderawtransaction(raw)["txid"] == proof_tx["tx_hash"]
    indexer.stop()
    indexer.start()
    compare(indexer.client(), truth)


def test_kill_9_while_blocks_arrive_loses_nothing(node: TestNode,
                                                  indexer: IndexerProcess) -> None:
    _, truth, _ = setup_watched(node, indexer)
    for i in range(6):
        fund(node, "w1", ["0.1"])
        node.mine(1)
        if i == 2:
            indexer.kill()  # mid-stream, no clean shutdown
    node.mine(20)
    indexer.start()
    indexer.wait_synced()
    compare(indexer.client(), truth)


def test_registration_is_idempotent_and_removable(node: TestNode,
                                                  indexer: IndexerProcess) -> None:
    client, truth, wid = setup_watched(node, indexer)
    fund(node, "w1", ["1"])
    node.mine(1)
    indexer.wait_synced()
    descs = [w["descriptor"] for w in indexer.wallets()[0]["branches"]]
    again = indexer.cli("wallet", "add", *descs).stdout
    assert "already registered" in again and wid in again
    assert len(indexer.wallets()) == 1
    some = next(s for s, v in truth.electrum_view().items() if v["history"])
    assert client.call("blockchain.scripthash.get_history", scripthash_of(some))
    indexer.cli("wallet", "remove", wid[:8])
    assert indexer.wallets() == []
    assert client.call("blockchain.scripthash.get_history", scripthash_of(some)) == []


def test_refuses_private_keys_and_bad_descriptors(node: TestNode,
                                                  indexer: IndexerProcess) -> None:
    node.createwallet("priv")
    private = next(d["desc"] for d in node.rpc("listdescriptors", True, wallet="priv")[
        "descriptors"] if d["desc"].startswith("wpkh("))
    res = indexer.cli("wallet", "add", private, check=False)
    assert res.returncode == 1 and "private" in res.stderr
    assert "prv" not in res.stderr  # never echo the key back
    res = indexer.cli("wallet", "add", "wpkh(notakey)", check=False)
    assert res.returncode == 1 and "invalid descriptor" in res.stderr
    assert indexer.wallets() == []


def test_extended_public_key_registration(node: TestNode, indexer: IndexerProcess) -> None:
    """A vpub (BIP84 account key, as phone wallets export it) watches wpkh /0/* and /1/*."""
    from appliance.chain import base58check_decode, base58check_encode

    node.createwallet("w1")
    desc = next(d["desc"] for d in node.rpc("listdescriptors", wallet="w1")["descriptors"]
                if d["desc"].startswith("wpkh(") and not d["internal"])
    tpub = desc.split("]")[1].split("/")[0]
    vpub = base58check_encode(bytes.fromhex("045f1cf6") + base58check_decode(tpub)[4:])
    indexer.wallet_add(vpub)
    indexer.wait_synced()
    wallet = indexer.wallets()[0]
    assert [b["descriptor"].split("#")[0] for b in wallet["branches"]] == [
        f"wpkh({tpub}/0/*)", f"wpkh({tpub}/1/*)"]
    truth = Truth(node, derive_scripts(node, [b["descriptor"] for b in wallet["branches"]], 40))
    fund(node, "w1", ["0.3"])
    node.mine(1)
    indexer.wait_synced()
    client = indexer.client()
    compare(client, truth)
    assert electrum_total(client, truth) == wallet_total(node, "w1")


def test_unknown_scripthash_gets_empty_answers_and_is_counted(
        node: TestNode, indexer: IndexerProcess) -> None:
    client, _, _ = setup_watched(node, indexer)
    foreign = node.validateaddress(node.new_address())["scriptPubKey"]
    node.send(node.new_address(), "1")  # history exists on chain, but not ours
    node.mine(1)
    indexer.wait_synced()
    sh = scripthash_of(foreign)
    assert client.call("blockchain.scripthash.get_history", sh) == []
    assert client.call("blockchain.scripthash.get_balance", sh) == {"confirmed": 0,
                                                                    "unconfirmed": 0}
    # (A subscription would make the box watch it from now on: test_indexer_adhoc.py.)
    assert client.call("blockchain.scripthash.subscribe", sh) is None
    assert indexer.status()["indexer"]["electrum"]["unknown_script_queries"] >= 3


def test_subscription_notifies_on_payment(node: TestNode, indexer: IndexerProcess) -> None:
    client, truth, _ = setup_watched(node, indexer)
    address = node.rpc("getnewaddress", wallet="w1")
    sh = scripthash_of(node.validateaddress(address)["scriptPubKey"])
    assert client.call("blockchain.scripthash.subscribe", sh) is None
    client.call("blockchain.headers.subscribe")
    node.send(address, "0.42")
    note = client.wait_notification("blockchain.scripthash.subscribe")
    assert note["params"][0] == sh and note["params"][1] is not None
    node.mine(1)
    header = client.wait_notification("blockchain.headers.subscribe")
    assert header["params"][0]["height"] == node.getblockcount()
    note2 = client.wait_notification("blockchain.scripthash.subscribe")
    assert note2["params"][1] != note["params"][1]


def test_a_client_asking_past_the_gap_gets_that_history(node: TestNode,
                                                        indexer: IndexerProcess) -> None:
    """Electrum set to a larger gap limit than the box's: the box follows, and backfills
    the scripts it had not watched."""
    client, _, _ = setup_watched(node, indexer)
    receive = next(w["descriptor"] for w in indexer.wallets()[0]["branches"]
                   if "/0/*" in w["descriptor"])
    far = node.deriveaddresses(receive, [25, 25])[0]  # past the 20-script gap
    txid = node.send(far, "0.77")
    node.mine(1)
    indexer.wait_synced()
    sh = scripthash_of(node.validateaddress(far)["scriptPubKey"])
    # The first answer already has the payment: the query waited for the gap job.
    assert client.call("blockchain.scripthash.subscribe", sh) is not None
    assert client.call("blockchain.scripthash.get_history", sh) == [
        {"tx_hash": txid, "height": node.getblockcount()}]
    wallet = indexer.wallets()[0]
    assert wallet["branches"][0]["derived"] >= 26 and wallet["jobs"] == []
    # And it is live from now on.
    txid2 = node.send(far, "0.1")
    wait_until(lambda: len(client.call("blockchain.scripthash.get_history", sh)) == 2)
    assert client.call("blockchain.scripthash.get_mempool", sh)[0]["tx_hash"] == txid2


def test_coins_past_the_gap_are_found_beside_the_block_scan(node: TestNode,
                                                           indexer: IndexerProcess) -> None:
    """Paid out of order: receive 45 (past the 20-script gap) before receive 0. The block
    scan alone stops at the gap; scantxoutset, run beside it, finds the coin, and once the
    wallet is live the gap moves past it and a job backfills the new scripts."""
    descs, _ = watch_wallet(node, "gappy")
    birthday = node.getblockcount() + 1
    receive = next(d for d in descs if "/0/*" in d)
    far = node.deriveaddresses(receive, [45, 45])[0]
    far_txid = node.send(far, "0.45")
    node.mine(1)
    node.send(node.deriveaddresses(receive, [0, 0])[0], "0.1")
    node.mine(1)
    indexer.wallet_add(*descs, birthday=birthday)

    def branch() -> dict[str, Any] | None:
        wallet = indexer.wallets()[0]
        if wallet["state"] != "live" or wallet["jobs"]:
            return None
        found: dict[str, Any] = next(b for b in wallet["branches"] if "/0/*" in b["descriptor"])
        return found if found["used"] == 45 else None
    wait_until(lambda: branch() is not None)
    assert branch()["derived"] >= 66  # type: ignore[index]
    client = indexer.client()
    sh = scripthash_of(node.validateaddress(far)["scriptPubKey"])
    assert client.call("blockchain.scripthash.get_history", sh) == [
        {"tx_hash": far_txid, "height": birthday}]
    assert client.call("blockchain.scripthash.get_balance", sh) == {
        "confirmed": 45_000_000, "unconfirmed": 0}
    assert "past the gap: watching up to 65" in indexer.log_text()


def test_broadcast_and_package_broadcast_reach_bitcoind(node: TestNode,
                                                        indexer: IndexerProcess) -> None:
    client, _, _ = setup_watched(node, indexer)
    c16 = indexer.client(version="1.6")  # broadcast_package is new in 1.6
    dest = node.rpc("getnewaddress", wallet="w1")
    # A parent (not broadcast) and a child spending it: a package.
    parent = node.rpc("send", {dest: "1"}, None, "unset", None,
                      {"add_to_wallet": False}, wallet=node.wallet)["hex"]
    decoded = node.decoderawtransaction(parent)
    vout = next(o for o in decoded["vout"] if o["scriptPubKey"].get("address") == dest)
    child_raw = node.createrawtransaction([{"txid": decoded["txid"], "vout": vout["n"]}],
                                          {node.new_address(): "0.999"})
    child = node.rpc("signrawtransactionwithwallet", child_raw, [{
        "txid": decoded["txid"], "vout": vout["n"], "scriptPubKey": vout["scriptPubKey"]["hex"],
        "amount": vout["value"]}], wallet="w1")["hex"]
    assert c16.call("blockchain.transaction.broadcast_package", [parent, child]) == {
        "success": True}
    mempool = node.getrawmempool()
    assert decoded["txid"] in mempool and node.decoderawtransaction(child)["txid"] in mempool
    # A double spend of the parent is refused with bitcoind's reason.
    bad = node.rpc("send", {node.new_address(): "0.5"}, None, "unset", None,
                   {"add_to_wallet": False, "inputs": decoded["vin"][:1]},
                   wallet=node.wallet)["hex"]
    with pytest.raises(ElectrumError, match="rejected by network rules"):
        client.call("blockchain.transaction.broadcast", bad)
    ok = node.rpc("send", {node.new_address(): "0.1"}, None, "unset", None,
                  {"add_to_wallet": False}, wallet=node.wallet)["hex"]
    txid = client.call("blockchain.transaction.broadcast", ok)
    assert txid in node.getrawmempool()



def test_bitcoind_restart_is_survived(node: TestNode, indexer: IndexerProcess) -> None:
    client, truth, _ = setup_watched(node, indexer)
    fund(node, "w1", ["0.4"])
    node.mine(1)
    indexer.wait_synced()
    node.stop()
    node.start()  # new cookie, sequence numbers from 0, the mempool empty
    fund(node, "w1", ["0.6"])
    node.mine(2)
    indexer.wait_synced()
    compare(client, truth)
    assert indexer.process is not None and indexer.process.poll() is None


def test_status_bus_shows_the_indexer_and_its_death(node: TestNode,
                                                    indexer: IndexerProcess) -> None:
    client, _, _ = setup_watched(node, indexer)
    client.call("blockchain.scripthash.get_history", "ab" * 32)  # nobody's script

    def indexer_state() -> dict[str, Any]:
        state: dict[str, Any] = indexer.status()["services"]["indexer"]
        return state

    wait_until(lambda: indexer_state()["status"]["counters"]["unknown_script_queries"] >= 1)
    state = indexer_state()
    assert state["stale"] is False and state["status"]["phase"] == "ready"
    assert state["status"]["counters"]["wallets"] == 1
    assert state["status"]["counters"]["height"] == node.getblockcount()
    indexer.kill()  # kill -9: no goodbye message, a socket file left behind
    res = indexer.cli("status", "--json", check=False)
    assert res.returncode == 1
    assert json.loads(res.stdout)["services"]["indexer"]["stale"] is True
    indexer.start()  # and back
    wait_until(lambda: indexer.cli("status", check=False).returncode == 0, timeout=30)

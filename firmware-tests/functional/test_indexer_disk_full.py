"""The indexer on a really full disk.

`appliance wallet add`: an explicit error, nothing half-registered, and a registration
acknowledged after the space came back survives a kill -9. Blocks and a reorg: the same
process pauses, says why, serves what is on disk, and catches up by itself."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.chain import hash_to_hex_str, hex_str_to_hash
from appliance.indexer.store import IndexStore
from functional.framework.appliance import ElectrumClient, IndexerProcess, scripthash_of
from functional.framework.disk import SmallDisk, small_disk
from functional.framework.node import TestNode
from functional.framework.truth import Truth
from functional.framework.util import wait_until
from functional.test_indexer_wallet import (
    compare,
    derive_scripts,
    electrum_total,
    fund,
    wallet_total,
)

pytestmark = pytest.mark.node


@pytest.fixture
def indexer_on_small_disk(tmp_path: Path, node: TestNode, timeout_factor: float
                          ) -> Iterator[tuple[IndexerProcess, SmallDisk]]:
    proc = IndexerProcess(tmp_path / "appliance", node, timeout_factor=timeout_factor)
    with small_disk(tmp_path / "appliance" / "data", 32) as disk:
        proc.start()
        try:
            yield proc, disk
        finally:
            proc.kill()


def _descriptors(node: TestNode, name: str) -> list[str]:
    node.createwallet(name)
    return [d["desc"] for d in node.rpc("listdescriptors", wallet=name)["descriptors"]
            if d["desc"].startswith("wpkh(")]


def test_wallet_add_on_a_full_disk(node: TestNode,
                                   indexer_on_small_disk: tuple[IndexerProcess, SmallDisk]) -> None:
    indexer, disk = indexer_on_small_disk
    indexer.wait_synced()
    disk.fill()
    acked = []
    for i in range(20):  # the log's last page may still take a registration or two
        res = indexer.cli("wallet", "add", *_descriptors(node, f"w{i}"), check=False)
        if res.returncode != 0:
            break
        acked.append(res.stdout.split()[1])
    out = res.stderr + res.stdout
    assert res.returncode != 0, "wallets were registered on a full disk"
    assert "wallet not added" in out and "disk is full" in out, out
    # Memory agrees with the disk: only what was acknowledged is registered.
    assert sorted(w["id"] for w in indexer.wallets()) == sorted(acked)
    disk.release()
    descs = _descriptors(node, "w2")
    wid = indexer.wallet_add(*descs)
    indexer.kill()  # acknowledged: it must be there after a kill -9
    indexer.start()
    assert sorted(w["id"] for w in indexer.wallets()) == sorted([*acked, wid])


def _paused(indexer: IndexerProcess) -> dict[str, Any] | None:
    """The indexer's status-bus state while it says it is paused by a full disk."""
    bus = (indexer.status()["services"].get("indexer") or {}).get("status")
    if bus is None or not bus["counters"].get("disk_full"):
        return None
    return dict(bus)


def _soon(predicate: Callable[[], Any], seconds: float) -> Any:
    """``predicate``'s value once truthy within ``seconds``, else None (no failure)."""
    deadline = time.monotonic() + seconds
    while (value := predicate()) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    return value


def _served(client: ElectrumClient, truth: Truth) -> dict[str, Any]:
    return {s: client.call("blockchain.scripthash.get_history", scripthash_of(s))
            for s in sorted(truth.scripts)}


def _confirmed(client: ElectrumClient, truth: Truth, height: int) -> None:
    """The confirmed history served equals bitcoind's up to ``height`` (mempool entries
    are left out: the slice is not followed while the index is paused)."""
    truth.update()
    for script in truth.scripts:
        want = [{"tx_hash": txid, "height": h} for h in sorted(truth.blocks) if h <= height
                for s, _pos, txid in truth.blocks[h].touches if s == script]
        got = [e for e in client.call("blockchain.scripthash.get_history", scripthash_of(script))
               if e["height"] > 0]
        assert got == want, script


def _index_tip(base: Path, node: TestNode) -> tuple[int, bytes] | None:
    """The tip the index holds on disk, read with the store itself (the process is gone)."""
    (path,) = [p.parent for p in base.rglob("CURRENT") if p.parent.name == "index"]
    store = IndexStore(path, hex_str_to_hash(node.getblockhash(0)))
    try:
        return store.tip()
    finally:
        store.close()


def test_blocks_and_a_reorg_on_a_full_disk_pause_the_index(
        node: TestNode, indexer_on_small_disk: tuple[IndexerProcess, SmallDisk]) -> None:
    """The chain path on a full disk: the same process pauses, says why, keeps serving
    the old history, and catches up by itself once space is back (a reorg included), with
    exactly bitcoind's history; a kill -9 afterwards loses nothing."""
    indexer, disk = indexer_on_small_disk
    descs = _descriptors(node, "w1")
    indexer.wallet_add(*descs)
    indexer.wait_synced()
    truth = Truth(node, derive_scripts(node, descs, 60))
    fund(node, "w1", ["1", "2", "0.5"])
    node.mine(1)
    indexer.wait_synced()
    client = indexer.client()
    compare(client, truth)
    assert indexer.process is not None
    pid = indexer.process.pid
    reorg_from = node.getblockcount()  # a block with wallet transactions, indexed

    disk.fill()
    # Blocks paying the wallet, to new addresses (its gap moves: the block's batch holds
    # history, outputs, the wallet record and new scripts). The log's last page may
    # take a block or two before a write fails.
    for _ in range(12):
        fund(node, "w1", ["0.1", "0.2"])
        node.mine(1)
        if _soon(lambda: _paused(indexer), 5):
            break
    bus = _paused(indexer)
    assert bus is not None, "the index never paused on a full disk"
    assert bus["phase"] == "degraded" and "disk is full" in (bus["last_error"] or ""), bus
    assert "index paused" in bus["detail"], bus
    assert indexer.process is not None and indexer.process.poll() is None
    assert indexer.process.pid == pid, "the indexer was restarted"
    held = indexer.status()["indexer"]["height"]
    assert reorg_from <= held < node.getblockcount()
    # Clients, old and new, are answered from what is on disk.
    _confirmed(client, truth, held)
    _confirmed(indexer.client(), truth, held)
    served = _served(client, truth)

    # A reorg while full: the index's blocks from reorg_from on leave bitcoind's chain,
    # and undoing them needs writes too.
    node.invalidateblock(node.getblockhash(reorg_from))
    fund(node, "w1", ["0.3"])
    node.mine(2)
    # The follower's retry meets the reorg, and the undo's write the full disk.
    indexer.wait_log(f"the undo of block {held}")
    assert _paused(indexer) is not None
    assert indexer.process.poll() is None and indexer.process.pid == pid
    assert indexer.status()["indexer"]["height"] == held  # nothing half undone
    assert _served(client, truth) == served  # the old branch, as on disk

    disk.release()
    indexer.wait_synced(timeout=60)
    assert indexer.process.poll() is None and indexer.process.pid == pid
    wait_until(lambda: _paused(indexer) is None, timeout=10)
    assert indexer.status()["services"]["indexer"]["status"]["phase"] == "ready"
    wait_until(lambda: electrum_total(client, truth) == wallet_total(node, "w1"), timeout=30)
    compare(client, truth)  # history, unspent and balance of 120 scripts, mempool included

    tip = (indexer.status()["indexer"]["height"], indexer.status()["indexer"]["tip"])
    wallets = indexer.wallets()
    indexer.kill()
    on_disk = _index_tip(indexer.base / "data", node)
    assert on_disk is not None and on_disk[0] == tip[0], (on_disk, tip)
    assert hash_to_hex_str(on_disk[1]) == tip[1]
    indexer.start()
    assert indexer.wallets() == wallets  # used/derived as acknowledged
    indexer.wait_synced()
    compare(indexer.client(), truth)


def test_a_payment_taken_in_on_a_full_disk_is_matched_once_there_is_room(
        node: TestNode, indexer_on_small_disk: tuple[IndexerProcess, SmallDisk]) -> None:
    """Mempool intake whose gap moves (a payment to the wallet's next address) needs a
    write: on a full disk the index pauses instead of dropping the match, and the whole
    mempool is matched again at the resync once space is back."""
    indexer, disk = indexer_on_small_disk
    descs = _descriptors(node, "w1")
    indexer.wallet_add(*descs)
    indexer.wait_synced()
    truth = Truth(node, derive_scripts(node, descs, 80))
    client = indexer.client()
    assert indexer.process is not None
    pid = indexer.process.pid
    disk.fill()
    for _ in range(40):  # no block: only the mempool path writes
        fund(node, "w1", ["0.01"])
        if _soon(lambda: _paused(indexer), 2):
            break
    bus = _paused(indexer)
    assert bus is not None, "the index never paused on a full disk"
    assert "(the wallets)" in (bus["last_error"] or ""), bus  # the derived scripts' write
    assert indexer.process.poll() is None and indexer.process.pid == pid
    disk.release()
    wait_until(lambda: _paused(indexer) is None, timeout=30)
    wait_until(lambda: electrum_total(client, truth) == wallet_total(node, "w1"), timeout=30)
    compare(client, truth)
    assert indexer.process.poll() is None and indexer.process.pid == pid

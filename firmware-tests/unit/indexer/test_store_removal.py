"""Removing a wallet from the index store (the event loop served between scripts): its
history, outputs and the txs only it held go; a tx another wallet's script also has
stays."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from appliance.indexer.schema import (
    conf_key,
    history_key,
    output_key,
    script_output_key,
    tx_key,
    wallet_key,
    wallet_script_key,
)
from appliance.indexer.store import IndexStore
from appliance.node.pace import Pacer

GENESIS = b"\x11" * 32
GONE, KEPT = b"\x01" * 8, b"\x02" * 8


def _h(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def _store(path: Path, txs: int) -> tuple[IndexStore, set[bytes], bytes]:
    """Wallet GONE: ``txs`` txs over 50 scripts; wallet KEPT: one script, whose only tx
    is also one of GONE's (a payment between the two)."""
    store = IndexStore(path, GENESIS)
    gone = {_h("sh", i) for i in range(50)}
    shared = _h("tx", 0)
    batch = store.begin_plain()
    batch.put(wallet_key(GONE), b"{}")
    batch.put(wallet_key(KEPT), b"{}")
    for i in range(50):
        batch.put(wallet_script_key(GONE, 0, i), b"\x00\x14" + bytes(20))
    for n in range(txs):
        txid, sh = _h("tx", n), _h("sh", n % 50)
        batch.put(tx_key(txid), b"raw")
        batch.put(conf_key(txid), b"conf")
        batch.put(history_key(sh, 100 + n, 1), txid)
        batch.put(output_key(txid, 0), sh + bytes(12))
        batch.put(script_output_key(sh, 100 + n, txid, 0), b"")
    batch.put(history_key(_h("kept"), 100, 1), shared)
    store.commit_backfill(batch)
    return store, gone, shared


def _left(store: IndexStore) -> list[tuple[bytes, bytes]]:
    return list(store.db.iterator())


def test_removal_keeps_what_another_wallet_holds(tmp_path: Path) -> None:
    store, gone, shared = _store(tmp_path / "db", 300)
    for sh in gone:
        store.history(sh)  # cached: must not outlive the removal
    asyncio.run(store.delete_wallet(GONE, gone, Pacer(budget=0.0)))  # yields every step
    assert store.db.get(wallet_key(GONE)) is None
    assert store.db.get(wallet_key(KEPT)) == b"{}"
    assert all(store.history(sh) == [] for sh in gone)
    assert store.tx(shared) == b"raw"  # KEPT's history still names it
    assert [store.tx(_h("tx", n)) for n in range(1, 300)] == [None] * 299
    assert store.db.get(conf_key(_h("tx", 7))) is None
    assert store.db.get(output_key(_h("tx", 7), 0)) is None
    assert list(store.db.iterator(prefix=wallet_script_key(GONE, 0, 0)[:9])) == []


def test_removal_leaves_exactly_the_other_wallets_keys(tmp_path: Path) -> None:
    store, gone, shared = _store(tmp_path / "db", 120)
    asyncio.run(store.delete_wallet(GONE, gone, Pacer()))
    # the store's format record, KEPT's wallet and history row, the shared tx and its conf
    assert len(_left(store)) == 5
    assert {k for k, _v in _left(store)} >= {
        wallet_key(KEPT), history_key(_h("kept"), 100, 1), tx_key(shared), conf_key(shared)}

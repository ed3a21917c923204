"""Ad-hoc watches (watch on subscribe): bounds, eviction, expiry and persistence, on a
real LevelDB store (matching itself is tested against bitcoind in
functional/test_indexer_adhoc.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from appliance.chain import script_to_scripthash
from appliance.indexer.adhoc import ADHOC_EXPIRY, ADHOC_TOUCH, AdhocEntry, AdhocWatches
from appliance.indexer.index import Indexer
from appliance.indexer.schema import history_key, tx_key
from appliance.indexer.store import IndexStore

GENESIS = b"\x11" * 32
T0 = 1_700_000_000


class NoRPC:
    async def call(self, method: str, *params: Any) -> Any:
        raise AssertionError(f"no RPC expected ({method})")


def sh(n: int) -> bytes:
    return bytes([n]) * 32


def never(_sh: bytes) -> bool:
    return False


def make(path: Path) -> Indexer:
    idx = Indexer(IndexStore(path, GENESIS), NoRPC(), "regtest")
    idx.load()
    return idx


def test_watch_adhoc_is_new_once_and_persists(tmp_path: Path) -> None:
    idx = make(tmp_path / "db")
    assert idx.watch_adhoc(sh(1), T0, never) is True
    assert idx.watch_adhoc(sh(1), T0 + 5, never) is False  # already watched
    assert idx.is_watched_scripthash(sh(1)) and not idx.is_watched_scripthash(sh(2))
    idx.store.close()
    again = make(tmp_path / "db")
    assert again.is_watched_scripthash(sh(1))
    assert again.adhoc.entries[sh(1)] == AdhocEntry(T0, T0)


def test_matching_hashes_scripts_only_while_adhoc_watches_exist(tmp_path: Path) -> None:
    idx = make(tmp_path / "db")
    script = bytes.fromhex("0014") + b"\x42" * 20
    assert not idx.watched_script(script) and not idx.watches_anything()
    idx.watch_adhoc(script_to_scripthash(script), T0, never)
    assert idx.watched_script(script) and idx.watches_anything()
    assert not idx.watched_script(bytes.fromhex("0014") + b"\x43" * 20)


def test_a_wallet_script_is_never_adhoc(tmp_path: Path) -> None:
    idx = make(tmp_path / "db")
    idx.scripts.by_scripthash[sh(3)] = b"wallet script"
    assert idx.watch_adhoc(sh(3), T0, never) is False
    assert sh(3) not in idx.adhoc


def test_touch_is_written_at_most_daily(tmp_path: Path) -> None:
    idx = make(tmp_path / "db")
    idx.watch_adhoc(sh(1), T0, never)
    idx.watch_adhoc(sh(1), T0 + ADHOC_TOUCH - 1, never)
    assert idx.store.adhoc_records()[sh(1)].last == T0
    idx.watch_adhoc(sh(1), T0 + ADHOC_TOUCH, never)
    assert idx.store.adhoc_records()[sh(1)].last == T0 + ADHOC_TOUCH


def test_full_evicts_the_least_recently_subscribed_unused_one(tmp_path: Path) -> None:
    idx = make(tmp_path / "db")
    idx.adhoc.limit = 3
    for n in (1, 2, 3):
        assert idx.watch_adhoc(sh(n), T0 + n * ADHOC_TOUCH, never)
    idx.store.db.put(history_key(sh(1), 5, 0), b"\x77" * 32)
    idx.store.db.put(tx_key(b"\x77" * 32), b"raw")

    def subscribed(s: bytes) -> bool:
        return s == sh(1)  # the oldest is still subscribed somewhere: not a victim

    assert idx.watch_adhoc(sh(4), T0 + 9 * ADHOC_TOUCH, subscribed)
    assert set(idx.adhoc) == {sh(1), sh(3), sh(4)}
    assert set(idx.store.adhoc_records()) == {sh(1), sh(3), sh(4)}
    assert idx.store.history(sh(1))  # the survivor keeps its index

    # Every one subscribed right now: a new one is refused, nothing is dropped.
    assert idx.watch_adhoc(sh(5), T0 + 10 * ADHOC_TOUCH, lambda s: True) is False
    assert set(idx.adhoc) == {sh(1), sh(3), sh(4)}


def test_upkeep_refreshes_subscribed_and_forgets_expired_with_their_index(
        tmp_path: Path) -> None:
    idx = make(tmp_path / "db")
    for n in (1, 2):
        idx.watch_adhoc(sh(n), T0, never)
    txid = b"\x55" * 32
    for n in (1, 2):
        idx.store.db.put(history_key(sh(n), 7, n), txid)
    idx.store.db.put(tx_key(txid), b"raw")

    def subscribed(s: bytes) -> bool:
        return s == sh(2)

    assert idx.upkeep_adhoc(T0 + ADHOC_EXPIRY // 2, subscribed) == set()
    assert idx.adhoc.entries[sh(2)].last == T0 + ADHOC_EXPIRY // 2  # refreshed
    gone = idx.upkeep_adhoc(T0 + ADHOC_EXPIRY + 1, subscribed)
    assert gone == {sh(1)}
    assert set(idx.adhoc) == {sh(2)} and set(idx.store.adhoc_records()) == {sh(2)}
    assert idx.store.history(sh(1)) == []
    assert idx.store.tx(txid) == b"raw"  # still in sh(2)'s history
    assert not idx.is_watched_scripthash(sh(1))


def test_victim_and_expired_on_the_bookkeeping_alone() -> None:
    w = AdhocWatches({sh(1): AdhocEntry(0, 30), sh(2): AdhocEntry(0, 10),
                      sh(3): AdhocEntry(0, 20)}, limit=3, expiry=15)
    assert w.victim(never) == sh(2)
    assert w.victim(lambda s: s == sh(2)) == sh(3)
    assert w.victim(lambda s: True) is None
    assert sorted(w.expired(40, never)) == [sh(2), sh(3)]
    assert w.expired(40, lambda s: s == sh(2)) == [sh(3)]

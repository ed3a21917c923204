"""The index store's chain writes on a real full disk (a small tmpfs): each failure is an
explicit DiskFull that leaves the tip and the history as they were, later writes wait
for room and a fresh log, and everything written after the space came back is there
after the database is opened again (issue 12's lost-after-a-failed-append, for blocks)."""

from __future__ import annotations

from pathlib import Path

import pytest
from functional.framework.disk import small_disk

from appliance.chain import double_sha256
from appliance.durability import DiskFull
from appliance.indexer.schema import history_key
from appliance.indexer.store import IndexStore

GENESIS = b"\x11" * 32
SH = b"\x22" * 32


def header(height: int) -> bytes:
    return height.to_bytes(4, "big") * 20


def commit(store: IndexStore, height: int) -> None:
    batch = store.begin_block(height)
    # A few KiB per block, as a block paying a wallet writes its raw transactions.
    batch.put(history_key(SH, height, 1), double_sha256(header(height)))
    batch.put(b"x" + height.to_bytes(4, "big"), bytes(4000))
    store.commit_block(batch, header(height), double_sha256(header(height)))


def rows(store: IndexStore) -> list[int]:
    return [h for h, _pos, _txid in store.history(SH)]


def test_block_writes_on_a_full_disk_fail_cleanly_and_resume(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", 16) as disk:
        store = IndexStore(disk.path / "db", GENESIS)
        for h in range(3):
            commit(store, h)
        assert rows(store) == [0, 1, 2]  # (now cached: a failed write must not stale it)
        disk.fill()
        last = 2
        for h in range(3, 400):  # the log's last page may take a block or two
            try:
                commit(store, h)
            except DiskFull as exc:
                assert "block" in exc.text and "disk is full" in exc.text
                break
            last = h
        else:
            pytest.fail("blocks were stored on a full disk")
        assert store.tip() == (last, double_sha256(header(last)))
        assert rows(store) == list(range(last + 1))
        # Until there is room for a fresh log, writes are refused before LevelDB sees them.
        with pytest.raises(DiskFull, match="undo of block"):
            store.rollback_tip()
        batch = store.begin_plain()
        batch.put(b"y", b"1")
        with pytest.raises(DiskFull, match="the wallets"):
            store.commit_backfill(batch)
        assert store.tip() == (last, double_sha256(header(last)))
        assert rows(store) == list(range(last + 1))

        disk.release()
        height, touched, _ = store.rollback_tip()
        assert height == last and SH in touched
        for h in range(last, last + 3):
            commit(store, h)
        store.close()
        again = IndexStore(disk.path / "db", GENESIS)
        assert again.tip() == (last + 2, double_sha256(header(last + 2)))
        assert rows(again) == list(range(last + 3))
        again.close()

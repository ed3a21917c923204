"""appliance.node.filter_repair on a LevelDB laid out as bitcoind's block filter index
(the real crash and repair: firmware-tests/functional/test_node_filter_repair.py)."""

from __future__ import annotations

from pathlib import Path

import plyvel
import pytest

from appliance.node.filter_repair import index_db, main, rewind_filter_index
from appliance.supervision.repair import needs_repair

VERSION = bytes.fromhex("80110100")


def block_hash(height: int, branch: int = 0) -> bytes:
    return bytes([branch]) + height.to_bytes(4, "little") + bytes(27)


def make_index(path: Path, top: int, locator_height: int) -> None:
    path.mkdir(parents=True)
    db = plyvel.DB(str(path), create_if_missing=True)
    for h in range(top + 1):
        db.put(b"t" + h.to_bytes(4, "big"), block_hash(h) + bytes(32) + bytes(32) + b"\x00\x10")
    # The locator names a block on the old branch: what bitcoind cannot read back.
    db.put(b"B", VERSION + b"\x02" + block_hash(locator_height, 1) + block_hash(0))
    db.close()


def test_locator_moves_back_to_the_entry_below_the_top(tmp_path: Path) -> None:
    db_path = index_db(tmp_path, "regtest")
    make_index(db_path, top=350, locator_height=348)
    assert rewind_filter_index(db_path, 100) == 250
    db = plyvel.DB(str(db_path))
    try:
        assert db.get(b"B") == VERSION + b"\x01" + block_hash(250)
        assert db.get(b"t" + (350).to_bytes(4, "big")) is not None  # entries kept
    finally:
        db.close()


def test_short_chain_goes_back_to_genesis(tmp_path: Path) -> None:
    db_path = index_db(tmp_path, "main")
    assert db_path == tmp_path / "indexes" / "blockfilter" / "basic" / "db"
    make_index(db_path, top=30, locator_height=30)
    assert rewind_filter_index(db_path) == 0


def test_refused_while_bitcoind_holds_the_index(tmp_path: Path) -> None:
    db_path = index_db(tmp_path, "regtest")
    make_index(db_path, top=10, locator_height=10)
    held = plyvel.DB(str(db_path))  # LevelDB's LOCK, as a running bitcoind holds it
    try:
        with pytest.raises(OSError, match="cannot open"):
            rewind_filter_index(db_path)
        assert held.get(b"B") == VERSION + b"\x02" + block_hash(10, 1) + block_hash(0)
    finally:
        held.close()


def test_missing_index_and_auto_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(OSError, match="no block filter index"):
        rewind_filter_index(index_db(tmp_path, "signet"))
    assert main(["--datadir", str(tmp_path)]) == 1  # auto: none there
    assert "0 block filter indexes" in capsys.readouterr().err
    make_index(index_db(tmp_path, "signet"), top=200, locator_height=199)
    assert main(["--datadir", str(tmp_path)]) == 0  # auto: the one there
    assert "rewound to height 100" in capsys.readouterr().out
    make_index(index_db(tmp_path, "regtest"), top=5, locator_height=5)
    assert main(["--datadir", str(tmp_path)]) == 1  # two networks: say which
    assert main(["--datadir", str(tmp_path), "--chain", "regtest"]) == 0


def test_only_bitcoinds_damaged_index_asks_for_the_repair() -> None:
    tail = ("2026-12-04T14:28:58Z [error] Cannot read last block filter header; index may "
            "be corrupted\n2026-12-04T14:28:58Z Shutdown: done\n")
    assert needs_repair("bitcoind", tail)
    assert not needs_repair("hearth-indexer", tail)
    assert not needs_repair("bitcoind", "Error: Disk space is too low!\n")

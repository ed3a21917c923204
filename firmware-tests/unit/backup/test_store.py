"""The backup store: versioned append-only logs, snapshot generations, crash repair, quotas."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from appliance.backup.export import ExportError, capture_all, restore_export, write_export
from appliance.backup.store import LOG_HEADER, Store, StoreError

A = "aa" * 33
B = "bb" * 33
SID = "11" * 32


def _store(root: Path, **kw: int) -> Store:
    kw.setdefault("quota_bytes", 1 << 20)
    return Store(root, **kw)


def _snapshot(store: Store, version: int, data: bytes, owner: str = A, sid: str = SID,
              kind: str = "cln", takeover: bool = False) -> None:
    w = store.begin_snapshot(owner, sid, kind, version, len(data), takeover=takeover)
    w.write(data[: len(data) // 2])
    w.write(data[len(data) // 2:])
    w.commit()


def _records(store: Store, sid: str = SID) -> list[tuple[int, bytes]]:
    cap = store.capture(sid)
    try:
        return [(r.version, cap.read_record(r)) for r in cap.records]
    finally:
        cap.close()


def test_append_needs_a_snapshot_first(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with pytest.raises(StoreError) as err:
        store.append(A, SID, 1, b"x")
    assert err.value.code == "no-stream"


def test_plus_one_appends_equal_replaces_else_gap(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _snapshot(store, 9, b"db@9")
    assert not store.append(A, SID, 10, b"a").replaced
    assert store.append(A, SID, 10, b"a2").replaced
    store.append(A, SID, 11, b"b")
    for bad in (13, 9, 0):
        with pytest.raises(StoreError) as err:
            store.append(A, SID, bad, b"x")
        assert err.value.code == "gap"
    assert _records(store) == [(10, b"a2"), (11, b"b")]
    store.close()
    again = _store(tmp_path)  # everything survives a reopen, the replacement too
    assert _records(again) == [(10, b"a2"), (11, b"b")]
    assert again.info(SID) is not None and again.info(SID).version == 11  # type: ignore[union-attr]


def test_version_wraps_at_2_32(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _snapshot(store, 2**32 - 2, b"db")
    store.append(A, SID, 2**32 - 1, b"a")
    store.append(A, SID, 0, b"b")
    store.append(A, SID, 0, b"b2")
    store.append(A, SID, 1, b"c")
    assert _records(store) == [(2**32 - 1, b"a"), (0, b"b2"), (1, b"c")]
    with pytest.raises(StoreError):
        store.append(A, SID, 2**32, b"x")


@pytest.mark.parametrize("damage", ["half-header", "half-payload", "bad-crc"])
def test_torn_or_corrupt_tail_is_cut_and_the_rest_kept(tmp_path: Path, damage: str) -> None:
    store = _store(tmp_path)
    _snapshot(store, 0, b"db")
    store.append(A, SID, 1, b"one")
    store.append(A, SID, 2, b"two")
    store.close()
    log = tmp_path / "streams" / SID / "log-0000000001"
    size = log.stat().st_size
    with open(log, "r+b") as fh:
        if damage == "half-header":
            fh.seek(0, os.SEEK_END)
            fh.write(b"\x00\x00")
        elif damage == "half-payload":
            fh.seek(0, os.SEEK_END)
            fh.write(LOG_HEADER.pack(100, 3, 0) + b"partial")
        else:  # flip a payload byte of the last record
            fh.seek(size - 1)
            fh.write(b"X")
    again = _store(tmp_path)
    assert again.repaired == 1
    expect = [(1, b"one"), (2, b"two")] if damage != "bad-crc" else [(1, b"one")]
    assert _records(again) == expect
    # and appending goes on from there
    again.append(A, SID, expect[-1][0] + 1, b"next")
    assert _records(again)[-1] == (expect[-1][0] + 1, b"next")


def test_snapshot_starts_a_generation_and_drops_the_old_one(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _snapshot(store, 0, b"first")
    store.append(A, SID, 1, b"a")
    _snapshot(store, 41, b"second")
    store.append(A, SID, 42, b"b")
    info = store.info(SID)
    assert info is not None and info.generation == 2 and info.generations == [2]
    assert sorted(p.name for p in (tmp_path / "streams" / SID).iterdir()) == [
        "log-0000000002", "meta.json", "snap-0000000002"]
    cap = store.capture(SID)
    assert b"".join(cap.read_snapshot()) == b"second" and cap.snap_version == 41
    cap.close()


def test_file_streams_keep_n_versions(tmp_path: Path) -> None:
    store = _store(tmp_path, file_versions=2)
    for v in range(1, 5):
        _snapshot(store, v, f"scb v{v}".encode(), kind="file")
    info = store.info(SID)
    assert info is not None and info.generations == [3, 4]
    cap = store.capture(SID, 3)
    assert b"".join(cap.read_snapshot()) == b"scb v3"
    cap.close()
    with pytest.raises(StoreError) as err:
        store.capture(SID, 1)
    assert err.value.code == "no-generation"


def test_crash_during_snapshot_keeps_the_old_generation(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _snapshot(store, 0, b"old")
    store.append(A, SID, 1, b"a")
    w = store.begin_snapshot(A, SID, "cln", 5, 10)
    w.write(b"12345")  # the upload stops here: kill -9
    store.close()
    (tmp_path / "streams" / SID / "log-0000000002").write_bytes(b"")  # as if cut after this step
    again = _store(tmp_path)
    assert _records(again) == [(1, b"a")]
    assert sorted(p.name for p in (tmp_path / "streams" / SID).iterdir()) == [
        "log-0000000001", "meta.json", "snap-0000000001"]


def test_an_unfinished_first_snapshot_leaves_nothing(tmp_path: Path) -> None:
    store = _store(tmp_path)
    w = store.begin_snapshot(A, SID, "cln", 0, 10)
    w.write(b"12345")
    store.close()
    assert _store(tmp_path).streams() == []


def test_snapshot_size_is_checked(tmp_path: Path) -> None:
    store = _store(tmp_path)
    w = store.begin_snapshot(A, SID, "cln", 0, 4)
    with pytest.raises(StoreError):
        w.write(b"12345")
    w.write(b"12")
    with pytest.raises(StoreError):
        w.commit()
    w.abort()
    assert store.streams() == []


def test_quota_counts_every_stream_of_the_owner(tmp_path: Path) -> None:
    store = _store(tmp_path, quota_bytes=1000)
    _snapshot(store, 0, b"x" * 400)
    _snapshot(store, 0, b"y" * 400, sid="22" * 32)
    with pytest.raises(StoreError) as err:
        store.append(A, SID, 1, b"z" * 200)
    assert err.value.code == "quota" and "quota exceeded" in str(err.value)
    store.append(A, SID, 1, b"z" * 100)
    # a replacing snapshot may use the space its old generation frees
    _snapshot(store, 1, b"w" * 450)
    with pytest.raises(StoreError):
        store.begin_snapshot(A, "33" * 32, "cln", 0, 500)
    # another client's quota is its own
    _snapshot(store, 0, b"v" * 900, owner=B, sid="44" * 32)


def test_only_the_owner_writes_unless_it_takes_over(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _snapshot(store, 0, b"db")
    with pytest.raises(StoreError) as err:
        store.append(B, SID, 1, b"x")
    assert err.value.code == "forbidden"
    with pytest.raises(StoreError):
        store.begin_snapshot(B, SID, "cln", 0, 2)
    _snapshot(store, 7, b"db", owner=B, takeover=True)
    store.append(B, SID, 8, b"x")
    assert store.info(SID).owner == B  # type: ignore[union-attr]
    store.close()
    assert _store(tmp_path).info(SID).owner == B  # type: ignore[union-attr]


def test_log_outgrowing_the_snapshot_asks_for_compaction(tmp_path: Path) -> None:
    store = _store(tmp_path, compact_min_bytes=100)
    _snapshot(store, 0, b"s" * 150)
    wanted = [store.append(A, SID, v, b"r" * 20).snapshot_wanted for v in range(1, 10)]
    assert wanted.index(True) == 4  # 5 records * 32 bytes > 150
    _snapshot(store, 9, b"s" * 150)
    assert not store.append(A, SID, 10, b"r").snapshot_wanted


def test_export_is_a_point_in_time(tmp_path: Path) -> None:
    store = _store(tmp_path / "box")
    _snapshot(store, 0, b"db")
    store.append(A, SID, 1, b"one")
    captures = capture_all(store)
    store.append(A, SID, 2, b"two")  # after the capture: not in this export
    path = write_export(captures, tmp_path / "box" / "export.bin")
    assert path.stat().st_mode & 0o777 == 0o600
    with tarfile.open(path) as tar:
        names = tar.getnames()
        assert names[0] == "index.json"
        log = tar.extractfile(f"streams/{SID}/log-0000000001")
        assert log is not None
        data = log.read()
    assert b"one" in data and b"two" not in data
    # the exported files are a valid store again
    restored = tmp_path / "restored"
    assert restore_export(path, restored) == 1
    again = _store(restored)
    assert _records(again) == [(1, b"one")]
    with pytest.raises(ExportError, match="already holds"):
        restore_export(path, restored)


def test_restore_export_refuses_foreign_members(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        for name, data in (("index.json", b'{"format": "hearth-backup-export"}'),
                           ("streams/../../etc/passwd", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ExportError, match="unexpected member"):
        restore_export(evil, tmp_path / "box")
    assert not (tmp_path / "box" / "streams").exists()
    (tmp_path / "junk").write_bytes(b"not a tar")
    with pytest.raises(ExportError):
        restore_export(tmp_path / "junk", tmp_path / "box")


def test_background_compaction_carries_the_later_records(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _snapshot(store, 0, b"db@0")
    for v in range(1, 6):
        store.append(A, SID, v, f"r{v}".encode())
    w = store.begin_snapshot(A, SID, "cln", 3, 4, carry=True)  # the db read at version 3
    w.write(b"db@3")
    store.append(A, SID, 5, b"r5'")  # the writer goes on meanwhile, even replacing
    store.append(A, SID, 6, b"r6")
    w.commit()
    expect = [(4, b"r4"), (5, b"r5'"), (6, b"r6")]
    assert _records(store) == expect
    store.append(A, SID, 7, b"r7")
    store.close()
    again = _store(tmp_path)
    assert _records(again) == [*expect, (7, b"r7")]
    info = again.info(SID)
    assert info is not None and info.generations == [2] and info.version == 7


def test_a_stale_carried_snapshot_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _snapshot(store, 10, b"db@10")
    store.append(A, SID, 11, b"a")
    w = store.begin_snapshot(A, SID, "cln", 7, 4, carry=True)  # older than the log
    w.write(b"db@7")
    with pytest.raises(StoreError) as err:
        w.commit()
    assert err.value.code == "gap"
    assert _records(store) == [(11, b"a")]
    assert not list((tmp_path / "streams" / SID).glob(".upload-*"))
    w = store.begin_snapshot(A, SID, "cln", 10, 5, carry=True)  # = the snapshot: keeps all
    w.write(b"db@10")
    w.commit()
    assert _records(store) == [(11, b"a")]
    with pytest.raises(StoreError):
        store.begin_snapshot(B, SID, "cln", 11, 1, carry=True)

"""Benchmark: backup log growth over 100,000 CLN writes, compaction and restore times.

Run: .venv/bin/python firmware-tests/bench/backup_compaction.py [--writes 100000] [--no-sync]

Builds a real sqlite database by applying ``--writes`` lightningd-like transactions (an
HTLC row added, channel counters bumped; CLN keeps HTLC rows for the channel's life)
while appending each sealed batch to a real :class:`Store`: fdatasync per write, unless
``--no-sync`` (which skips only that sync, to show the CPU part). Then compaction as the
box gets it: the client reads the database (SQLite backup API) and seals it, and the
store writes it as a new generation and drops the old log. Last, the restore: unseal and
replay every change from the first snapshot, versus unseal one compacted snapshot.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # standalone: find `appliance`

from appliance.backup import store as store_mod  # noqa: E402
from appliance.backup.store import Store  # noqa: E402
from appliance.client.cln import (  # noqa: E402
    cln_keys,
    rebuild_database,
    seal_change,
    seal_snapshot,
    snapshot_database,
    unseal_change,
    unseal_snapshot,
)

__all__ = ["main"]

OWNER = "aa" * 33
SCHEMA = """
CREATE TABLE vars (name TEXT PRIMARY KEY, val TEXT, intval INTEGER);
INSERT INTO vars VALUES ('data_version', NULL, 0);
CREATE TABLE channels (id INTEGER PRIMARY KEY, next_index_local INTEGER, next_index_remote INTEGER,
                       shachain BLOB);
INSERT INTO channels VALUES (1, 0, 0, NULL);
CREATE TABLE channel_htlcs (id INTEGER PRIMARY KEY, channel_htlc_id INTEGER, msat INTEGER,
                            payment_hash BLOB, hstate INTEGER);
"""


def batch(i: int) -> list[str]:
    writes = [f"INSERT INTO channel_htlcs (channel_htlc_id, msat, payment_hash, hstate) "
              f"VALUES ({i}, {i * 1000}, X'{secrets.token_hex(32)}', 3)",
              f"UPDATE channels SET next_index_local = {i}, next_index_remote = {i}, "
              f"shachain = X'{secrets.token_hex(32)}' WHERE id = 1"]
    writes.append(f"UPDATE vars SET intval = intval + 1 WHERE name = 'data_version' AND intval = {i - 1}")
    return writes


def mib(n: int) -> str:
    return f"{n / 2**20:8.2f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writes", type=int, default=100_000)
    ap.add_argument("--no-sync", action="store_true", help="skip fdatasync (CPU cost only)")
    args = ap.parse_args()
    if args.no_sync:
        os.fdatasync = lambda fd: None  # type: ignore[assignment]
        store_mod.os.fdatasync = os.fdatasync  # type: ignore[attr-defined]
    print(f"backup log growth and compaction, {args.writes:,} writes "
          f"({platform.machine()}, {'no sync' if args.no_sync else 'fdatasync per write'})")
    work = Path(tempfile.mkdtemp(prefix="bench-compact-", dir=HERE.parents[1] / ".cache"))
    try:
        keys = cln_keys(secrets.token_bytes(32))
        db_path = work / "lightningd.sqlite3"
        db = sqlite3.connect(db_path, isolation_level=None)
        db.executescript(SCHEMA)
        db.execute("PRAGMA synchronous = OFF")  # time the backup, not this node's own commits
        store = Store(work / "box", quota_bytes=1 << 40, compact_min_bytes=1 << 20)
        first = snapshot_database(db_path)
        blob = seal_snapshot(keys.node_id, keys.stream, 0, first)
        w = store.begin_snapshot(OWNER, keys.stream, "cln", 0, len(blob))
        w.write(blob)
        w.commit()
        wanted_at = None
        sql_bytes = 0
        t0 = time.perf_counter()
        for i in range(1, args.writes + 1):
            writes = batch(i)
            sql_bytes += sum(len(s) for s in writes)
            db.execute("BEGIN")
            for s in writes:
                db.execute(s)
            res = store.append(OWNER, keys.stream, i, seal_change(keys.node_id, keys.stream, i, writes))
            db.execute("COMMIT")
            if res.snapshot_wanted and wanted_at is None:
                wanted_at = i
            if i in (1000, 10_000, args.writes):
                info = store.info(keys.stream)
                assert info is not None
                print(f"  after {i:>7,} writes: log {mib(info.log_bytes)} "
                      f"({info.log_bytes / i:5.0f} B/write; SQL {sql_bytes / i:4.0f} B/write), "
                      f"db {mib(db_path.stat().st_size)}, {time.perf_counter() - t0:7.1f} s")
        elapsed = time.perf_counter() - t0
        print(f"  append rate: {args.writes / elapsed:,.0f} writes/s (seal + append + sqlite commit)")
        print(f"  box asked for compaction at write {wanted_at:,} (log > snapshot and > 1 MiB)"
              if wanted_at else "  box never asked for compaction")
        db.close()
        log_before = store.info(keys.stream).log_bytes  # type: ignore[union-attr]
        before = store.capture(keys.stream)  # open fds: readable after compaction unlinks them

        t = time.perf_counter()
        database = snapshot_database(db_path)
        t_read = time.perf_counter() - t
        t = time.perf_counter()
        blob = seal_snapshot(keys.node_id, keys.stream, args.writes, database)
        t_seal = time.perf_counter() - t
        t = time.perf_counter()
        w = store.begin_snapshot(OWNER, keys.stream, "cln", args.writes, len(blob))
        for k in range(0, len(blob), 65535):
            w.write(blob[k:k + 65535])
        w.commit()
        t_store = time.perf_counter() - t
        info = store.info(keys.stream)
        assert info is not None
        print(f"  compaction: read db {t_read * 1000:.0f} ms + seal {t_seal * 1000:.0f} ms + "
              f"store {t_store * 1000:.0f} ms = {(t_read + t_seal + t_store) * 1000:.0f} ms; "
              f"{mib(log_before)} log -> {mib(info.snapshot_bytes)} snapshot "
              f"(db {mib(len(database))}), ratio {log_before / max(1, info.snapshot_bytes):.0f}:1")
        store.close()

        # restore cost: replaying the whole stored log vs one compacted snapshot
        t = time.perf_counter()
        plain = [(r.version, unseal_change(keys.node_secret, keys.stream, r.version, before.read_record(r)))
                 for r in before.records]
        snap0 = unseal_snapshot(keys.node_secret, keys.stream, 0, b"".join(before.read_snapshot()))
        rebuild_database(work / "replayed.sqlite3", snap0, plain)
        t_replay = time.perf_counter() - t
        before.close()
        t = time.perf_counter()
        rebuild_database(work / "compacted.sqlite3",
                         unseal_snapshot(keys.node_secret, keys.stream, args.writes, blob), [])
        t_snap = time.perf_counter() - t
        print(f"  restore: replay {len(plain):,} changes {t_replay:.1f} s "
              f"({len(plain) / t_replay:,.0f} changes/s); one compacted snapshot {t_snap * 1000:.0f} ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

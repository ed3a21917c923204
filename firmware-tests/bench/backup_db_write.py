"""Benchmark: the CLN db_write round trip to the backup box: latency p50/p99 and throughput.

Run: .venv/bin/python firmware-tests/bench/backup_db_write.py [--writes 2000] [--hook-writes 1000]

Needs scripts/setup-dev --test (and its interop venv, for the plugin figures). The box is
a real ``appliance run backup`` process on 127.0.0.1 with its data on the repository's
disk (every acknowledged write fdatasync'ed), so the figures include the disk's sync cost:

* store only: one ``Store.append`` (write + fdatasync) in this process: the floor;
* client -> box: ``ClnBackup.db_write`` (seal to the node key, Noise round trip, box
  append + fdatasync, ack), what the plugin does inside the hook;
* lightningd -> plugin -> box: the whole hook as lightningd sees it, JSON-RPC over the
  plugin's stdio (pyln-client) in front of the above.
"""

from __future__ import annotations

import argparse
import json
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # standalone: find `appliance`
sys.path.insert(0, str(HERE.parent))  # and the test framework

from functional.framework.backup import INTEROP_PYTHON, BackupBox, Lightningd  # noqa: E402

from appliance.backup.store import Store  # noqa: E402
from appliance.client.backup import BoxAddress  # noqa: E402
from appliance.client.cln import cln_keys, seal_change  # noqa: E402
from appliance.client.cln_plugin import ClnBackup, PluginSettings  # noqa: E402
from appliance.transport.noise import Keypair  # noqa: E402

__all__ = ["main"]


def batch(i: int) -> list[str]:
    """A typical lightningd transaction: an HTLC and a channel state update (~600 bytes)."""
    return [f"INSERT INTO channel_htlcs (channel_id, channel_htlc_id, direction, msatoshi, cltv_expiry, "
            f"payment_hash, hstate) VALUES (1, {i}, 0, {i * 1000}, 800144, X'{secrets.token_hex(32)}', 3)",
            f"UPDATE channels SET next_index_local = {i}, next_index_remote = {i}, "
            f"shachain_remote_id = X'{secrets.token_hex(32)}' WHERE id = 1",
            f"UPDATE vars SET intval = intval + 1 WHERE name = 'data_version' AND intval = {i}"]


def summary(label: str, samples: list[float]) -> None:
    ms = sorted(s * 1000 for s in samples)
    p50, p99 = ms[len(ms) // 2], ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(f"  {label:<28} n={len(ms):<6} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
          f"mean {statistics.fmean(ms):6.2f} ms  -> {1000 / statistics.fmean(ms):7.0f} writes/s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writes", type=int, default=2000)
    ap.add_argument("--hook-writes", type=int, default=1000)
    args = ap.parse_args()
    print(f"backup db_write round trip ({platform.machine()}, Python {platform.python_version()})")
    work = Path(tempfile.mkdtemp(prefix="bench-backup-", dir=HERE.parents[1] / ".cache"))
    try:
        keys = cln_keys(secrets.token_bytes(32))
        store = Store(work / "store", quota_bytes=1 << 30)
        w = store.begin_snapshot("aa" * 33, keys.stream, "cln", 0, 4)
        w.write(b"snap")
        w.commit()
        samples = []
        for i in range(1, args.writes + 1):
            blob = seal_change(keys.node_id, keys.stream, i, batch(i))
            t = time.perf_counter()
            store.append("aa" * 33, keys.stream, i, blob)
            samples.append(time.perf_counter() - t)
        store.close()
        print(f"  sealed batch: {len(blob)} bytes (3 statements, {len(json.dumps(batch(1)))} bytes of SQL)")
        summary("store only (fdatasync)", samples)

        box = BackupBox(work / "box", quota_mib=1024)
        box.start()
        try:
            client_key = secrets.token_bytes(32)
            state = box.client_state(work / "client", client_key)
            db = work / "lightningd.sqlite3"
            db.write_bytes(b"")
            settings = PluginSettings(db, keys.node_id, keys.stream,
                                      BoxAddress("127.0.0.1", box.port, box.key), Keypair(client_key))
            backup = ClnBackup(settings)
            backup.db_write(1, batch(0))  # connect + first snapshot, not timed
            samples = []
            for i in range(2, args.writes + 2):
                b = batch(i)
                t = time.perf_counter()
                backup.db_write(i, b)
                samples.append(time.perf_counter() - t)
            backup.close()
            summary("client -> box (Noise)", samples)

            if INTEROP_PYTHON.exists() and args.hook_writes:
                cfg = {"db": str(db), "node_id": keys.node_id.hex(), "stream": keys.stream,
                       "box": {"host": "127.0.0.1", "port": box.port, "key": box.key.hex()}}
                (state / "cln-backup.json").write_text(json.dumps(cfg))
                ld = Lightningd(db, state)
                ld.start_plugin()
                base = args.writes + 1
                ld.call("db_write", {"data_version": base + 1, "writes": batch(base)})
                samples = []
                for i in range(base + 2, base + 2 + args.hook_writes):
                    b = batch(i)
                    t = time.perf_counter()
                    assert ld.call("db_write", {"data_version": i, "writes": b}) == {"result": "continue"}
                    samples.append(time.perf_counter() - t)
                ld.close()
                summary("lightningd -> plugin -> box", samples)
            else:
                print("  (no .cache/venv-interop: plugin figures skipped; run scripts/setup-interop)")
        finally:
            box.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

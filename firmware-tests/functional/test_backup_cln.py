"""The Core Lightning backup plugin, driven as lightningd drives it, against a real box.

A real sqlite database, the real plugin under pyln-client (its own venv), a real
``appliance run backup`` over Noise; then ``appliance-client backup restore`` with only
the node's hsm_secret on a freshly paired machine, compared row for row.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from functional.framework.backup import (
    INTEROP_PYTHON,
    BackupBox,
    Lightningd,
    PluginHalted,
    dump_database,
)
from functional.framework.util import run_client, running, wait_until

pytestmark = pytest.mark.skipif(not INTEROP_PYTHON.exists(),
                                reason="scripts/setup-interop makes the plugin's venv")

_U32 = 1 << 32



@pytest.fixture
def box(tmp_path: Path, timeout_factor: float) -> Iterator[BackupBox]:
    yield from running(BackupBox(tmp_path / "box", compact_min_kib=16,
                                 timeout_factor=timeout_factor))


def make_node(tmp_path: Path, box: BackupBox, start_version: int) -> tuple[Lightningd, Path, Path]:
    """A node's directory: hsm_secret, an existing database, a paired and set-up client."""
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    hsm = node_dir / "hsm_secret"
    hsm.write_bytes(secrets.token_bytes(32))
    hsm.chmod(0o600)
    db = node_dir / "lightningd.sqlite3"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE vars (name TEXT PRIMARY KEY, val TEXT, intval INTEGER);"
        f"INSERT INTO vars VALUES ('data_version', NULL, {start_version});"
        "CREATE TABLE peers (id INTEGER PRIMARY KEY, node_id BLOB UNIQUE, address TEXT);")
    conn.commit()
    conn.close()
    state = box.client_state(tmp_path / "node-client", secrets.token_bytes(32))
    run_client(state, "backup", "--port", str(box.port), "setup-cln", "--hsm-secret", str(hsm),
           "--db", str(db), "--retry-s", "2")
    return Lightningd(db, state), hsm, db


def channel_tx(i: int) -> list[str]:
    return [f"INSERT INTO channels (peer_id, state, msat, blob) VALUES (1, {i % 7}, {i * 1000}, "
            f"X'{secrets.token_hex(40)}')",
            f"UPDATE peers SET address = '10.0.0.{i % 250}:9735' WHERE id = 1"]


def restore(tmp_path: Path, box: BackupBox, hsm: Path, name: str) -> Path:
    """On a new machine: a new client key, paired; only the hsm_secret is carried over."""
    state = box.client_state(tmp_path / f"{name}-client", secrets.token_bytes(32))
    out = tmp_path / f"{name}.sqlite3"
    run_client(state, "backup", "--port", str(box.port), "restore", "--hsm-secret", str(hsm),
           "--out", str(out))
    return out


@pytest.mark.slow
def test_plugin_backs_up_every_commit_and_restore_matches(tmp_path: Path, box: BackupBox) -> None:
    ld, hsm, db = make_node(tmp_path, box, start_version=_U32 - 4)
    manifest = ld.start_plugin(init=False)
    assert any(h == "db_write" or (isinstance(h, dict) and h.get("name") == "db_write")
               for h in manifest["hooks"])
    # db_write before init (lightningd runs its migrations first): the first write
    # finds no backup, so the plugin uploads a snapshot of the database and the batch.
    ld.transaction(["CREATE TABLE channels (id INTEGER PRIMARY KEY, peer_id INTEGER, "
                    "state INTEGER, msat INTEGER, blob BLOB)",
                    "INSERT INTO peers (id, node_id, address) VALUES (1, X'02aa', '')"])
    ld.init()
    versions = [ld.transaction(channel_tx(i)) for i in range(8)]
    assert versions[:5] == [_U32 - 2, _U32 - 1, 0, 1, 2]  # wrapped at 2^32
    assert box.status()["counters"]["snapshots"] == 1

    # A rewind: lightningd dies after the hook answered but before COMMIT; on restart it
    # sends the same data_version again with other writes, and the backup replaces it.
    ld.transaction(["DELETE FROM channels WHERE id = 1"], commit=False)
    ld.stop_plugin()
    ld.start_plugin(init=False)
    ld.transaction(["UPDATE channels SET state = 99 WHERE id = 2"])
    ld.init()
    assert dump_database(restore(tmp_path, box, hsm, "after-rewind")) == dump_database(db)

    # A clean restart, then lightningd runs a while without the plugin (a gap): the
    # next write uploads a fresh snapshot.
    ld.stop_plugin()
    ld.start_plugin()
    ld.transaction(channel_tx(100))
    ld.stop_plugin()
    for i in range(3):
        ld.transaction(channel_tx(200 + i), hook=False)
    ld.start_plugin()
    before = box.status()["counters"]["snapshots"]
    ld.transaction(channel_tx(300))
    assert box.status()["counters"]["snapshots"] == before + 1

    # Compaction: the log outgrows the snapshot (16 KiB floor here) and the box says so;
    # the plugin snapshots in the background while the hook keeps appending, and the box
    # carries the records written meanwhile into the new generation.
    before = box.status()["counters"]["snapshots"]
    for i in range(120):
        ld.transaction([f"INSERT INTO channels (peer_id, state, msat, blob) VALUES "
                        f"(1, 1, {i}, X'{secrets.token_hex(400)}')"])
    wait_until(lambda: box.status()["counters"]["snapshots"] > before, timeout=30)
    for i in range(20):
        ld.transaction(channel_tx(500 + i))
    assert any("compacted: snapshot at data_version" in line for line in ld.logs)
    with_log = restore(tmp_path, box, hsm, "after-compaction")
    assert dump_database(with_log) == dump_database(db)
    ld.transaction(channel_tx(400))
    ld.close()

    restored = restore(tmp_path, box, hsm, "final")
    assert dump_database(restored) == dump_database(db)
    assert sqlite3.connect(restored).execute("PRAGMA integrity_check").fetchone() == ("ok",)
    # the box holds ciphertext only
    for path in (box.data_dir / "backup").rglob("*"):
        if path.is_file():
            assert b"10.0.0." not in path.read_bytes() and b"INSERT" not in path.read_bytes()


def test_restore_with_the_wrong_hsm_secret_finds_nothing(tmp_path: Path, box: BackupBox) -> None:
    ld, hsm, db = make_node(tmp_path, box, start_version=5)
    ld.start_plugin()
    ld.transaction(["INSERT INTO peers (id, node_id) VALUES (1, X'02bb')"])
    ld.close()
    other = tmp_path / "other_hsm"
    other.write_bytes(secrets.token_bytes(32))
    state = box.client_state(tmp_path / "thief", secrets.token_bytes(32))
    res = run_client(state, "backup", "--port", str(box.port), "restore", "--hsm-secret", str(other),
                 "--out", str(tmp_path / "x.sqlite3"), check=False)
    assert res.returncode == 1 and "holds no backup of node" in res.stderr
    assert not (tmp_path / "x.sqlite3").exists()


def test_box_down_means_no_continue_and_no_commit(tmp_path: Path, box: BackupBox) -> None:
    ld, hsm, db = make_node(tmp_path, box, start_version=0)
    ld.start_plugin()
    ld.transaction(["INSERT INTO peers (id, node_id) VALUES (1, X'02cc')"])
    box.stop()
    with pytest.raises(PluginHalted, match="unreachable"):
        ld.transaction(["INSERT INTO peers (id, node_id) VALUES (2, X'02dd')"])
    assert ld.data_version() == 1  # lightningd did not commit
    assert [r[0] for r in ld.db.execute("SELECT id FROM peers")] == [1]
    assert any("FAILED" in line for line in ld.logs)
    ld.close()


def test_unpaired_plugin_halts_with_a_clear_reason(tmp_path: Path, box: BackupBox) -> None:
    ld, hsm, db = make_node(tmp_path, box, start_version=0)
    from appliance.transport.noise import Keypair

    box.revoke(Keypair((ld.state / "client_key").read_bytes()).public)
    ld.start_plugin()
    with pytest.raises(PluginHalted, match="not paired"):
        ld.transaction(["INSERT INTO peers (id, node_id) VALUES (1, X'02ee')"])
    assert ld.data_version() == 0
    ld.close()

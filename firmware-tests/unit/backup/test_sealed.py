"""Sealing to a public key, and the Core Lightning key derivation and formats."""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path

import coincurve
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from appliance.backup.sealed import OVERHEAD, SealedError, seal, unseal
from appliance.client.cln import (
    RestoreError,
    cln_keys,
    rebuild_database,
    seal_change,
    seal_snapshot,
    snapshot_database,
    unseal_change,
    unseal_snapshot,
)


def test_seal_round_trip_and_every_tamper_fails() -> None:
    me = coincurve.PrivateKey()
    other = coincurve.PrivateKey()
    blob = seal(me.public_key.format(), b"channel state", b"ctx")
    assert len(blob) == len(b"channel state") + OVERHEAD
    assert unseal(me.secret, blob, b"ctx") == b"channel state"
    assert seal(me.public_key.format(), b"channel state", b"ctx") != blob  # fresh ephemeral key
    with pytest.raises(SealedError, match="wrong key"):
        unseal(other.secret, blob, b"ctx")
    with pytest.raises(SealedError):
        unseal(me.secret, blob, b"other context")
    flipped = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(SealedError):
        unseal(me.secret, flipped, b"ctx")
    with pytest.raises(SealedError, match="not a sealed"):
        unseal(me.secret, b"garbage", b"ctx")


def test_node_key_is_core_lightnings_derivation() -> None:
    secret = bytes(range(32))
    keys = cln_keys(secret)
    # lightningd/hsmd: hkdf_sha256(salt = u32 counter 0, ikm = hsm_secret, info = "nodeid")
    expect = HKDF(algorithm=hashes.SHA256(), length=32, salt=struct.pack("<I", 0),
                  info=b"nodeid").derive(secret)
    assert keys.node_secret == expect
    assert keys.node_id == coincurve.PrivateKey(expect).public_key.format()
    assert len(keys.stream) == 64 and keys.stream != cln_keys(bytes(32)).stream
    assert keys.node_secret.hex() not in repr(keys)
    with pytest.raises(ValueError, match="32-byte"):
        cln_keys(bytes(64))


def test_change_and_snapshot_are_bound_to_stream_and_version() -> None:
    keys = cln_keys(bytes(range(32)))
    blob = seal_change(keys.node_id, keys.stream, 7, ["INSERT INTO t VALUES (1)"])
    assert unseal_change(keys.node_secret, keys.stream, 7, blob) == ["INSERT INTO t VALUES (1)"]
    with pytest.raises(SealedError):
        unseal_change(keys.node_secret, keys.stream, 8, blob)  # the box moved it
    snap = seal_snapshot(keys.node_id, keys.stream, 6, b"db bytes")
    assert unseal_snapshot(keys.node_secret, keys.stream, 6, snap) == b"db bytes"
    with pytest.raises(SealedError):
        unseal_snapshot(keys.node_secret, "00" * 32, 6, snap)


def test_rebuild_replays_changes_and_never_overwrites(tmp_path: Path) -> None:
    src = tmp_path / "src.sqlite3"
    conn = sqlite3.connect(src)
    conn.execute("CREATE TABLE t (a INTEGER)")
    conn.commit()
    conn.close()
    out = tmp_path / "out.sqlite3"
    assert rebuild_database(out, snapshot_database(src), [
        (1, ["INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (2)"]),
        (2, ["DELETE FROM t WHERE a = 1"])]) == 2
    assert sqlite3.connect(out).execute("SELECT a FROM t").fetchall() == [(2,)]
    with pytest.raises(RestoreError, match="exists"):
        rebuild_database(out, b"", [])
    with pytest.raises(RestoreError, match="does not apply"):
        rebuild_database(tmp_path / "bad.sqlite3", snapshot_database(src),
                         [(1, ["INSERT INTO nope VALUES (1)"])])
    assert snapshot_database(tmp_path / "missing.sqlite3") == b""

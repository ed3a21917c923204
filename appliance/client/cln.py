"""Core Lightning backups: the node key from ``hsm_secret``, the sealed formats, the restore.

Everything the box stores for a node is sealed (:mod:`appliance.backup.sealed`) to the
node's own public key, so the node's ``hsm_secret`` is the only thing needed to read it:

* node key: Core Lightning's own derivation, ``HKDF-SHA256(salt=u32 counter (little
  endian, from 0), ikm=hsm_secret, info="nodeid")``, the counter bumped in the
  (practically impossible) case the result is not a valid key; the public key is the
  node id everyone sees. Only the legacy 32-byte ``hsm_secret`` is supported (not an
  encrypted one, not the newer mnemonic-derived 64-byte form).
* stream id: ``HKDF-SHA256(ikm=node secret key, info="hearth/cln-backup/v1/stream-id")``,
  hex: where the box keeps this node's backup. Knowing it lets a paired client read the
  ciphertext; it cannot be derived from public data, so a restore needs the secret.
* a change: ``seal(node_pub, zlib(JSON list of SQL statements), "hearth-cln|<id>|change|<v>")``
* a snapshot: ``seal(node_pub, zlib(sqlite database bytes), "hearth-cln|<id>|snapshot|<v>")``
"""

from __future__ import annotations

import json
import sqlite3
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import coincurve
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..backup.sealed import seal, unseal
from ..durability import replace_durably

__all__ = ["ClnKeys", "RestoreError", "cln_keys", "rebuild_database", "seal_change", "seal_snapshot",
           "snapshot_database", "snapshot_with_version", "unseal_change", "unseal_snapshot"]

_U32 = 1 << 32


class RestoreError(ValueError):
    """The backup cannot be turned back into a database (message says why)."""


@dataclass(frozen=True)
class ClnKeys:
    node_secret: bytes
    node_id: bytes  # 33-byte compressed public key
    stream: str

    def __repr__(self) -> str:
        return f"ClnKeys(node_id={self.node_id.hex()}, stream={self.stream[:16]}…)"


def cln_keys(hsm_secret: bytes) -> ClnKeys:
    if len(hsm_secret) != 32:
        raise ValueError(f"hsm_secret is {len(hsm_secret)} bytes; only the plain 32-byte form "
                         "is supported (decrypt an encrypted one with lightning-hsmtool first)")
    salt = 0
    while True:
        secret = HKDF(algorithm=hashes.SHA256(), length=32, salt=struct.pack("<I", salt),
                      info=b"nodeid").derive(hsm_secret)
        try:
            key = coincurve.PrivateKey(secret)
            break
        except ValueError:
            salt += 1
    stream = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                  info=b"hearth/cln-backup/v1/stream-id").derive(key.secret).hex()
    return ClnKeys(key.secret, key.public_key.format(), stream)


def _context(stream: str, what: str, version: int) -> bytes:
    return f"hearth-cln|{stream}|{what}|{version}".encode()


def seal_change(node_id: bytes, stream: str, version: int, writes: Sequence[str]) -> bytes:
    plain = zlib.compress(json.dumps(list(writes), separators=(",", ":")).encode(), 6)
    return seal(node_id, plain, _context(stream, "change", version))


def unseal_change(node_secret: bytes, stream: str, version: int, blob: bytes) -> list[str]:
    writes = json.loads(zlib.decompress(unseal(node_secret, blob, _context(stream, "change", version))))
    if not isinstance(writes, list) or not all(isinstance(w, str) for w in writes):
        raise RestoreError(f"change {version} is not a list of SQL statements")
    return writes


def seal_snapshot(node_id: bytes, stream: str, version: int, database: bytes) -> bytes:
    return seal(node_id, zlib.compress(database, 6), _context(stream, "snapshot", version))


def unseal_snapshot(node_secret: bytes, stream: str, version: int, blob: bytes) -> bytes:
    return zlib.decompress(unseal(node_secret, blob, _context(stream, "snapshot", version)))


def snapshot_database(path: Path, timeout: float = 10.0) -> bytes:
    """The committed state of the sqlite database at ``path``, read with SQLite's backup
    API over a read-only connection (consistent even while lightningd holds its write
    transaction open, which it does while it waits for the db_write hook)."""
    return snapshot_with_version(path, timeout)[0]


def snapshot_with_version(path: Path, timeout: float = 10.0) -> tuple[bytes, int | None]:
    """:func:`snapshot_database` and the data_version that copy is at (lightningd's
    ``vars`` row, as a u32), or None when the database has none yet."""
    if not path.exists():
        return b"", None
    src = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)
    dst = sqlite3.connect(":memory:")
    try:
        src.backup(dst)
        try:
            row = dst.execute("SELECT intval FROM vars WHERE name = 'data_version'").fetchone()
        except sqlite3.Error:
            row = None
        return bytes(dst.serialize()), None if row is None else int(row[0]) % _U32
    finally:
        src.close()
        dst.close()


def rebuild_database(out: Path, snapshot: bytes, changes: Sequence[tuple[int, list[str]]]) -> int:
    """Write ``snapshot`` to ``out`` and replay ``changes`` in order, one transaction each;
    returns the data_version reached. ``out`` must not exist (nothing is overwritten)."""
    if out.exists():
        raise RestoreError(f"{out} exists: move it away first (nothing was changed)")
    tmp = out.with_name(out.name + ".restoring")
    tmp.unlink(missing_ok=True)
    tmp.write_bytes(snapshot)
    conn = sqlite3.connect(tmp, isolation_level=None)
    # No sync per replayed change: the file only counts once it is renamed into place,
    # after one fsync at the end (100,000 synced commits would take minutes on a Pi).
    conn.execute("PRAGMA synchronous = OFF")
    version = -1
    try:
        for version, writes in changes:
            conn.execute("BEGIN")
            for statement in writes:
                try:
                    conn.execute(statement)
                except sqlite3.Error as exc:
                    conn.execute("ROLLBACK")
                    raise RestoreError(f"change {version} does not apply: {exc}") from None
            conn.execute("COMMIT")
        if conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            raise RestoreError("the rebuilt database fails sqlite's integrity check")
    finally:
        conn.close()
    replace_durably(tmp, out)
    return version

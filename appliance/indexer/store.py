"""The indexer's LevelDB (plyvel): one process owns it; every block is one atomic batch.

Crash safety: a block's effects, its header, its undo record and the new tip are written
in one ``WriteBatch``; after a kill -9 the index either contains the block or its tip is
still the parent and the block is applied again. Writes are not fsynced one by one (the
SD card would wear and stall); LevelDB's log still replays whole batches in order, so an
OS crash loses a suffix of blocks, never half of one. ``sync()`` forces a flush at
shutdown and after catch-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import struct
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plyvel

from ..chain import double_sha256
from ..durability import REOPEN_FREE_BYTES, DiskFull, has_room, write_error
from ..node.pace import Pacer
from .adhoc import AdhocEntry
from .schema import (
    DB_FORMAT,
    P_ADHOC,
    P_FORMAT,
    P_HISTORY,
    P_OUTPUT,
    P_SCRIPT_OUTPUT,
    P_SPENT,
    P_TIP,
    P_WALLET,
    P_WALLET_SCRIPT,
    UNDO_DEPTH,
    adhoc_key,
    conf_key,
    header_key,
    output_key,
    pack_height,
    spent_key,
    tx_key,
    undo_key,
    unpack_height,
    wallet_key,
    wallet_script_key,
)

__all__ = ["IndexStore", "OutputRecord", "StoreError", "UndoBatch", "WrongNetwork"]

log = logging.getLogger("indexer.store")

#: Scripthashes whose confirmed history is kept in memory (a few wallets' worth;
#: ~150 bytes for a script with a couple of transactions).
HISTORY_CACHE = 50_000

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class StoreError(Exception):
    """The index on disk cannot be used as it is."""


class WrongNetwork(StoreError):
    """The index was built for another chain (genesis hash differs)."""


@dataclass(frozen=True, slots=True)
class OutputRecord:
    txid: bytes
    vout: int
    scripthash: bytes
    value: int
    height: int


def encode_undo(entries: list[tuple[bytes, bytes | None]]) -> bytes:
    """(key, previous value or None) pairs, in write order."""
    out = bytearray()
    for key, old in entries:
        out += _U16.pack(len(key)) + key
        if old is None:
            out += b"\x00"
        else:
            out += b"\x01" + _U32.pack(len(old)) + old
    return bytes(out)


def decode_undo(data: bytes) -> list[tuple[bytes, bytes | None]]:
    entries: list[tuple[bytes, bytes | None]] = []
    pos = 0
    while pos < len(data):
        (klen,) = _U16.unpack_from(data, pos)
        key = data[pos + 2:pos + 2 + klen]
        pos += 2 + klen
        if data[pos] == 0:
            entries.append((key, None))
            pos += 1
        else:
            (vlen,) = _U32.unpack_from(data, pos + 1)
            entries.append((key, data[pos + 5:pos + 5 + vlen]))
            pos += 5 + vlen
    return entries


class UndoBatch:
    """Puts and deletes for one height, remembering old values so they can be undone."""

    def __init__(self, store: IndexStore, height: int | None, *, undoable: bool = True) -> None:
        self.store = store
        self.height = height
        self._undoable = undoable and height is not None
        self.writes: dict[bytes, bytes | None] = {}
        self.undo: list[tuple[bytes, bytes | None]] = []

    def get(self, key: bytes) -> bytes | None:
        if key in self.writes:
            return self.writes[key]
        value: bytes | None = self.store.db.get(key)
        return value

    def put(self, key: bytes, value: bytes) -> None:
        self._record(key)
        self.writes[key] = value

    def delete(self, key: bytes) -> None:
        self._record(key)
        self.writes[key] = None

    def write_to(self, wb: Any) -> None:
        """Copy the puts and deletes into a LevelDB write batch."""
        for key, value in self.writes.items():
            if value is None:
                wb.delete(key)
            else:
                wb.put(key, value)
            if key[:1] == P_HISTORY:
                self.store.history_changed(key[1:33])

    def _record(self, key: bytes) -> None:
        if self._undoable and key not in self.writes:
            self.undo.append((key, self.store.db.get(key)))


class IndexStore:
    """Typed access to the index tables (see schema.py and docs/index-schema.md)."""

    def __init__(self, path: Path, genesis_hash: bytes, *, cache_mib: int = 16,
                 history_cache: int = HISTORY_CACHE) -> None:
        self.path = path
        self.cache_mib = cache_mib
        self._stale_log = False  # a write failed: reopen before the next one
        #: scripthash -> its confirmed history, most recently used last. Every write of
        #: a history row goes through write_to, rollback_tip or _forget, which drop the
        #: entry: a hit is always what LevelDB holds.
        self._history: OrderedDict[bytes, tuple[tuple[int, int, bytes], ...]] = OrderedDict()
        self._history_max = history_cache
        self.history_hits = 0
        path.mkdir(parents=True, exist_ok=True)
        self.db = self._open(path, cache_mib)
        stored = self.db.get(P_FORMAT)
        want = _U32.pack(DB_FORMAT) + genesis_hash
        if stored is None:
            self.db.put(P_FORMAT, want, sync=True)
        elif stored[4:] != genesis_hash:
            self.db.close()
            raise WrongNetwork(f"{path} was built for another network; move it away to reindex")
        elif stored != want:
            log.warning("index format %d != %d: rebuilding the index",
                        _U32.unpack_from(stored)[0], DB_FORMAT)
            wallets = list(self.wallet_records().items())
            self.db.close()
            shutil.rmtree(path)
            path.mkdir(parents=True)
            self.db = self._open(path, cache_mib)
            self.db.put(P_FORMAT, want, sync=True)
            for wid, record in wallets:  # registrations survive a rebuild
                record["state"] = "new"
                self.put_wallet(wid, record)

    @staticmethod
    def _open(path: Path, cache_mib: int) -> Any:
        # Small caches: the Pi has 4 GB for bitcoind, the indexer and everything else.
        return plyvel.DB(str(path), create_if_missing=True, lru_cache_size=cache_mib << 20,
                         write_buffer_size=4 << 20, bloom_filter_bits=10)

    def close(self) -> None:
        if not self.db.closed:
            self.db.close()

    def sync(self) -> None:
        """Force everything written so far to disk (an empty synced write flushes the log)."""
        with self._writing("the index"):
            self.db.put(P_TIP + b"-sync", b"", sync=True)

    @contextlib.contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        """Every write goes through here: on a fresh log (after a failed one), and a
        failure comes out as the durability contract's DiskFull/WriteFailed, with the
        log marked stale. A failed batch wrote nothing (LevelDB applies it whole or not
        at all): the caller puts its memory back (docs/reliability.md)."""
        self._fresh_log(what)
        with self._failing(what):
            yield

    @contextlib.contextmanager
    def _failing(self, what: str) -> Iterator[None]:
        try:
            yield
        except plyvel.Error as exc:
            self._stale_log = True
            raise write_error(exc, what) from None

    # --- tip and headers ---------------------------------------------------------------
    def tip(self) -> tuple[int, bytes] | None:
        raw = self.db.get(P_TIP)
        if raw is None:
            return None
        return unpack_height(raw), raw[4:36]

    def header(self, height: int) -> bytes | None:
        value = self.db.get(header_key(height))
        return bytes(value) if value is not None else None

    def headers(self, start: int, count: int) -> list[bytes]:
        out: list[bytes] = []
        if count <= 0:
            return out
        for _key, value in self.db.iterator(start=header_key(start),
                                            stop=header_key(start + count)):
            out.append(value)
        return out

    def put_headers(self, start: int, headers: list[bytes], tip_hash: bytes) -> None:
        """Headers-only progress (before any wallet exists), with the tip, atomically."""
        with self._writing(f"headers {start}..{start + len(headers) - 1}"), \
                self.db.write_batch(transaction=True) as wb:
            for i, h in enumerate(headers):
                wb.put(header_key(start + i), h)
            wb.put(P_TIP, pack_height(start + len(headers) - 1) + tip_hash)

    # --- blocks ------------------------------------------------------------------------
    def begin_block(self, height: int) -> UndoBatch:
        return UndoBatch(self, height)

    def begin_backfill(self, height: int) -> UndoBatch:
        """Effects found for an already-connected block (a wallet's backfill). Old values
        are remembered only while the block still has an undo record (inside the reorg
        window): an older one can no longer be rolled back, and a LevelDB read per put
        to remember them was a tenth of adding a busy wallet."""
        return UndoBatch(self, height, undoable=self.db.get(undo_key(height)) is not None)

    def begin_plain(self) -> UndoBatch:
        """Writes that belong to no block (wallet records): nothing to undo."""
        return UndoBatch(self, None)

    def commit_block(self, batch: UndoBatch, header: bytes, block_hash: bytes) -> None:
        """Write a connected block's effects, header, undo record and tip in one batch."""
        assert batch.height is not None
        height = batch.height
        batch.put(header_key(height), header)
        with self._writing(f"block {height}"), self.db.write_batch(transaction=True) as wb:
            batch.write_to(wb)
            wb.put(undo_key(height), encode_undo(batch.undo))
            wb.put(P_TIP, pack_height(height) + block_hash)
            if height >= UNDO_DEPTH:
                wb.delete(undo_key(height - UNDO_DEPTH))

    def commit_backfill(self, batch: UndoBatch) -> None:
        """Write effects found for an already-connected block (a wallet's backfill)."""
        height = batch.height
        what = "the wallets" if height is None else f"wallet history at block {height}"
        with self._writing(what), self.db.write_batch(transaction=True) as wb:
            batch.write_to(wb)
            if height is not None and batch.undo:
                old = self.db.get(undo_key(height))
                if old is not None:  # only heights still inside the undo window
                    wb.put(undo_key(height), old + encode_undo(batch.undo))

    def rollback_tip(self) -> tuple[int, set[bytes], set[bytes]]:
        """Undo the tip block; returns (its height, touched scripthashes, removed txids)."""
        tip = self.tip()
        if tip is None:
            raise StoreError("nothing to roll back")
        height, _ = tip
        raw = self.db.get(undo_key(height))
        if raw is None:
            raise StoreError(f"no undo record for height {height}: reorg deeper than "
                             f"{UNDO_DEPTH} blocks; reindex needed")
        touched: set[bytes] = set()
        removed: set[bytes] = set()
        parent = self.header(height - 1) if height > 0 else None
        with self._writing(f"the undo of block {height}"), \
                self.db.write_batch(transaction=True) as wb:
            for key, old in reversed(decode_undo(raw)):
                if key[:1] in (P_WALLET, P_WALLET_SCRIPT) and \
                        self.db.get(P_WALLET + key[1:9]) is None:
                    continue  # a wallet removed since: do not bring it back
                if key[:1] == P_HISTORY:
                    touched.add(key[1:33])
                    self.history_changed(key[1:33])
                    removed.add(self.db.get(key) or b"")
                elif key[:1] == P_SCRIPT_OUTPUT:
                    touched.add(key[1:33])
                if old is None:
                    wb.delete(key)
                else:
                    wb.put(key, old)
            wb.delete(undo_key(height))
            wb.delete(header_key(height))
            if parent is None:
                wb.delete(P_TIP)
            else:
                wb.put(P_TIP, pack_height(height - 1) + double_sha256(parent))
        removed.discard(b"")
        return height, touched, removed

    # --- wallets -------------------------------------------------------------------------
    def wallet_records(self) -> dict[bytes, dict[str, Any]]:
        return {key[1:]: json.loads(value) for key, value in self.db.iterator(prefix=P_WALLET)}

    def put_wallet(self, wallet_id: bytes, record: dict[str, Any],
                   scripts: dict[tuple[int, int], bytes] | None = None) -> None:
        # Synced: `wallet add` is acknowledged once this returns (the durability contract).
        self._fresh_log()
        self._write_wallet(wallet_id, record, scripts)

    async def put_wallet_aside(self, wallet_id: bytes, record: dict[str, Any],
                               scripts: dict[tuple[int, int], bytes] | None = None) -> None:
        """``put_wallet``, the synced write in a worker thread: 10,000 scripts and an
        fsync held the event loop 40 ms here (plyvel writes without the GIL). The
        reopen after a failed write stays on the loop (it replaces ``self.db``)."""
        self._fresh_log()
        await asyncio.to_thread(self._write_wallet, wallet_id, record, scripts)

    def ensure_writable(self, what: str) -> None:
        """Refuse now (DiskFull) what would be refused at the write: after a failed write
        there is no room yet for a fresh log. Spares a retry the work before it."""
        self._fresh_log(what)

    def _fresh_log(self, what: str = "the wallet") -> None:
        if self._stale_log:
            # After a failed append LevelDB's log writer is out of step with its file:
            # later records could be lost at the next open. A fresh log first, once
            # there is room for it (docs/reliability.md).
            if not has_room(self.path, REOPEN_FREE_BYTES):
                raise DiskFull(what)
            self.db.close()
            self.db = self._open(self.path, self.cache_mib)
            self._stale_log = False

    def _write_wallet(self, wallet_id: bytes, record: dict[str, Any],
                      scripts: dict[tuple[int, int], bytes] | None) -> None:
        # (In a worker thread: the reopen, which replaces self.db, stays on the loop.)
        with self._failing("the wallet"), \
                self.db.write_batch(transaction=True, sync=True) as wb:
            wb.put(wallet_key(wallet_id), json.dumps(record, sort_keys=True).encode())
            for (branch, index), script in (scripts or {}).items():
                wb.put(wallet_script_key(wallet_id, branch, index), script)

    def wallet_scripts(self, wallet_id: bytes) -> Iterator[tuple[int, int, bytes]]:
        for key, value in self.db.iterator(prefix=P_WALLET_SCRIPT + wallet_id):
            yield key[9], unpack_height(key, 10), value

    async def delete_wallet(self, wallet_id: bytes, scripthashes: set[bytes],
                            pacer: Pacer) -> None:
        """Remove a wallet and the index entries of scripthashes no other wallet has,
        serving the event loop meanwhile: removing a 10,000-script wallet held it ~60 ms
        here (a LevelDB seek per script). The keys are gathered step by step, deleted in
        one batch, and only then are cached histories dropped. The caller keeps writers
        of these scripts away meanwhile (docs/architecture.md)."""
        keys = [wallet_key(wallet_id)]
        keys += self.db.iterator(prefix=P_WALLET_SCRIPT + wallet_id, include_value=False)
        for _ in self._forget_keys(scripthashes, keys):
            await pacer.tick()
        self._delete(keys, scripthashes, "the wallet's removal")

    def _forget_keys(self, scripthashes: set[bytes], keys: list[bytes]) -> Iterator[None]:
        """Into ``keys``: the history, outputs and (unless another script's history
        holds them) txs of ``scripthashes``; a step per script. The last part runs in
        one go: another wallet's backfill may be writing the same txs meanwhile, and what
        this pass sees must still hold when the batch is written right after it."""
        txids: set[bytes] = set()
        for sh in scripthashes:
            for key, txid in self.db.iterator(prefix=P_HISTORY + sh):
                keys.append(key)
                txids.add(txid)
            for key in self.db.iterator(prefix=P_SCRIPT_OUTPUT + sh, include_value=False):
                txid, vout = key[37:69], unpack_height(key, 69)
                keys += (key, output_key(txid, vout), spent_key(txid, vout))
            yield
        if not txids:
            return
        # Which of them another script's history still holds: one pass over the history
        # table (it was one pass per tx: minutes for a wallet of thousands).
        for key, txid in self.db.iterator(prefix=P_HISTORY):
            if txid in txids and key[1:33] not in scripthashes:
                txids.discard(txid)
        for txid in txids:
            keys += (tx_key(txid), conf_key(txid))

    def _delete(self, keys: list[bytes], scripthashes: set[bytes], what: str) -> None:
        with self._writing(what), self.db.write_batch(transaction=True) as wb:
            for key in keys:
                wb.delete(key)
        for sh in scripthashes:
            self.history_changed(sh)

    # --- ad-hoc watched scripts (see adhoc.py) --------------------------------------------
    def adhoc_records(self) -> dict[bytes, AdhocEntry]:
        return {key[1:]: AdhocEntry.unpack(value)
                for key, value in self.db.iterator(prefix=P_ADHOC)}

    def put_adhoc(self, scripthash: bytes, entry: AdhocEntry) -> None:
        with self._writing("an ad-hoc watch"):
            self.db.put(adhoc_key(scripthash), entry.pack())

    def delete_adhoc(self, scripthashes: set[bytes]) -> None:
        """Forget ad-hoc watches and their index entries, in one batch."""
        keys = [adhoc_key(sh) for sh in scripthashes]
        for _ in self._forget_keys(scripthashes, keys):
            pass
        self._delete(keys, scripthashes, "ad-hoc watches")

    # --- queries -------------------------------------------------------------------------
    def history(self, scripthash: bytes) -> list[tuple[int, int, bytes]]:
        """((height, position, txid), ...) in block order; cached, so many clients of
        one wallet cost one LevelDB walk per script until its history changes."""
        cached = self._history.get(scripthash)
        if cached is not None:
            self._history.move_to_end(scripthash)
            self.history_hits += 1
            return list(cached)
        rows = tuple((unpack_height(key, 33), unpack_height(key, 37), txid)
                     for key, txid in self.db.iterator(prefix=P_HISTORY + scripthash))
        self._history[scripthash] = rows
        if len(self._history) > self._history_max:
            self._history.popitem(last=False)
        return list(rows)

    def history_changed(self, scripthash: bytes) -> None:
        """A history row of ``scripthash`` is being written: forget its cached history."""
        self._history.pop(scripthash, None)

    def outputs(self, scripthash: bytes) -> list[OutputRecord]:
        out = []
        for key in self.db.iterator(prefix=P_SCRIPT_OUTPUT + scripthash, include_value=False):
            txid, vout = key[37:69], unpack_height(key, 69)
            value = self.db.get(output_key(txid, vout))
            if value is not None:
                out.append(OutputRecord(txid, vout, scripthash,
                                        _U64.unpack_from(value, 32)[0], unpack_height(key, 33)))
        return out

    def output(self, txid: bytes, vout: int) -> OutputRecord | None:
        value = self.db.get(output_key(txid, vout))
        if value is None:
            return None
        return OutputRecord(txid, vout, value[:32], _U64.unpack_from(value, 32)[0],
                            unpack_height(value, 40))

    def spender(self, txid: bytes, vout: int) -> tuple[bytes, int] | None:
        value = self.db.get(spent_key(txid, vout))
        if value is None:
            return None
        return value[:32], unpack_height(value, 32)

    def unspent_outpoints(self) -> Iterator[tuple[bytes, bytes]]:
        """(txid + vout BE, scripthash) of every indexed output not spent in a block."""
        for key, value in self.db.iterator(prefix=P_OUTPUT):
            if self.db.get(P_SPENT + key[1:]) is None:
                yield key[1:], value[:32]

    def tx(self, txid: bytes) -> bytes | None:
        value: bytes | None = self.db.get(tx_key(txid))
        return value

    def confirmation(self, txid: bytes) -> tuple[int, int, list[bytes]] | None:
        value = self.db.get(conf_key(txid))
        if value is None:
            return None
        branch = [value[i:i + 32] for i in range(8, len(value), 32)]
        return unpack_height(value), unpack_height(value, 4), branch

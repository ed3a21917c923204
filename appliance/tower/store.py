"""The tower's LevelDB: sweeps, appointments, users, trackers and the last block seen.

Keys (one-letter prefixes; integers big-endian so they sort):

=====================================================  ==================================
``L`` locator(16)                                      marker: something waits on this txid
``s`` prevout txid(32) vout(4) funding(36) ctn(8)      Electrum sweep tx (raw)
``S`` funding(36) prevout(36) ctn(8)                   the same sweep, by channel (cleanup)
``c`` funding(36)                                      channel: address, closing tx/height
``a`` locator(16) user(33)                             TEOS appointment: delay, start, blob
``u`` user(33)                                         TEOS user: slots, start, expiry
``x`` user(33) locator(16)                             the user's locators
``k`` breach txid(32)                                  tracker (a response in progress)
``P`` penalty txid(32)                                 -> breach txid
``T``                                                  tip: height(4) hash(32)
``H`` height(4)                                        hash of a recent block (reorgs)
``N``                                                  counters (JSON)
=====================================================  ==================================

Locators are the first 16 bytes of a txid in internal byte order, for both kinds, so the
watcher does one point lookup (``L``, helped by LevelDB's bloom filter) per transaction
and only reads further on a hit. Every write that a client is told succeeded is synced
to disk first: a kill -9 (or a power cut) loses nothing acknowledged.

A failed write (a full disk) raises :class:`~appliance.durability.DiskFull` or
:class:`~appliance.durability.WriteFailed` and changes nothing in memory: the counters
are stored in the same batch as what they count and updated in memory only once that
batch is on disk. LevelDB's log writer is out of step with its file after a failed
append (records written after it can be lost at the next open: the issue-12 "10
acknowledged, 0 readable"), so the database is closed and reopened, on a fresh log,
before the next write; until there is room for that, writes are refused and reads go on.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plyvel

from ..chain import hex_str_to_hash
from ..durability import REOPEN_FREE_BYTES, DiskFull, WriteFailed, has_room, write_error

__all__ = ["Appointment", "Sweep", "TowerStore", "User"]

_TIP = b"T"
_COUNTERS = b"N"
_Batch = Callable[[Any], None]


def _sweep_key(funding: bytes, ctn: int, prevout_: bytes) -> bytes:
    return b"s" + prevout_ + funding + struct.pack(">Q", ctn)


@dataclass(frozen=True, slots=True)
class Sweep:
    prevout: bytes  # txid(32, internal) + vout(4, big-endian)
    funding: bytes  # txid(32, internal) + vout(4)
    ctn: int
    raw_tx: bytes


@dataclass(frozen=True, slots=True)
class Appointment:
    locator: bytes
    user: bytes
    to_self_delay: int
    start_block: int
    blob: bytes


@dataclass(frozen=True, slots=True)
class User:
    user_id: bytes
    available_slots: int
    subscription_start: int
    subscription_expiry: int


_USER = struct.Struct(">III")  # available slots, subscription start, subscription expiry
_APPOINTMENT = struct.Struct(">II")  # to_self_delay, start block; the blob follows


def _user_of(user_id: bytes, raw: bytes) -> User:
    return User(user_id, *_USER.unpack(raw))


def _user_value(user: User) -> bytes:
    return _USER.pack(user.available_slots, user.subscription_start, user.subscription_expiry)


def _appointment_of(locator: bytes, user_id: bytes, raw: bytes) -> Appointment:
    delay, start = _APPOINTMENT.unpack(raw[:_APPOINTMENT.size])
    return Appointment(locator, user_id, delay, start, raw[_APPOINTMENT.size:])


def outpoint(txid: bytes, vout: int) -> bytes:
    return txid + struct.pack(">I", vout)


def slots_for(blob: bytes) -> int:
    """Slots an appointment takes, as rust-teos counts them (one per started 2 KiB)."""
    return max(1, -(-len(blob) // 2048))


class TowerStore:
    def __init__(self, path: Path, *, cache_mib: int = 8,
                 reopen_free_bytes: int = REOPEN_FREE_BYTES) -> None:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        self.cache_mib = cache_mib
        self.reopen_free_bytes = reopen_free_bytes
        self.db: Any = self._open()
        self.counters: dict[str, int] = self._stored_counters()
        #: the last write failed: reopen before the next one
        self.failed: WriteFailed | None = None

    def _open(self) -> Any:
        # bloom_filter_bits: the per-transaction miss lookup (almost every lookup is a
        # miss) then reads no data block. Small write buffer: few writes, SD card.
        try:
            return plyvel.DB(str(self.path), create_if_missing=True, bloom_filter_bits=10,
                             lru_cache_size=self.cache_mib << 20, write_buffer_size=2 << 20,
                             compression="snappy")
        except plyvel.IOError as exc:
            raise write_error(exc, "the tower database") from None

    def _stored_counters(self) -> dict[str, int]:
        raw = self.db.get(_COUNTERS)
        counters: dict[str, int] = {"sweeps": 0, "appointments": 0, "channels": 0, "users": 0,
                                    "trackers": 0}
        return {**counters, **json.loads(raw)} if raw else counters

    def close(self) -> None:
        self.db.close()

    # --- the one write path --------------------------------------------------------------
    def _write(self, what: str, fill: _Batch, deltas: Mapping[str, int] | None = None) -> None:
        """One atomic synced batch (and the counters moved by ``deltas``, in the same
        batch). Memory changes only after the batch is on disk."""
        self._ready_to_write(what)
        counters = dict(self.counters)
        for name, delta in (deltas or {}).items():
            counters[name] = max(0, counters.get(name, 0) + delta)
        wb = self.db.write_batch(sync=True)
        fill(wb)
        if deltas:
            wb.put(_COUNTERS, json.dumps(counters, sort_keys=True).encode())
        try:
            wb.write()
        except plyvel.Error as exc:
            self.failed = write_error(exc, what)
            raise self.failed from None
        self.counters = counters

    def recover(self) -> bool:
        """After a failed write: reopen if there is room now. True when writable."""
        try:
            self._ready_to_write("the tower database")
        except WriteFailed:
            return False
        return True

    def _ready_to_write(self, what: str) -> None:
        if self.failed is None:
            return
        if not has_room(self.path, self.reopen_free_bytes):
            raise DiskFull(what) if isinstance(self.failed, DiskFull) else self.failed
        # Reads keep the old handle until here; a reopen that fails even with room
        # leaves no handle, and the service's restart opens the database again.
        self.db.close()
        self.db = self._open()
        self.counters = self._stored_counters()  # a batch whose sync failed may be there
        self.failed = None

    # --- chain position ------------------------------------------------------------
    def tip(self) -> tuple[int, bytes] | None:
        raw = self.db.get(_TIP)
        if raw is None:
            return None
        return struct.unpack(">I", raw[:4])[0], raw[4:]

    def block_hash(self, height: int) -> bytes | None:
        result: bytes | None = self.db.get(b"H" + struct.pack(">I", height))
        return result

    def set_tip(self, height: int, block_hash: bytes, *, keep: int) -> None:
        def fill(wb: Any) -> None:
            wb.put(_TIP, struct.pack(">I", height) + block_hash)
            wb.put(b"H" + struct.pack(">I", height), block_hash)
            if height >= keep:
                wb.delete(b"H" + struct.pack(">I", height - keep))
        self._write("the tower's tip", fill)

    def drop_tip(self, height: int, parent_hash: bytes) -> None:
        """Forget the block at ``height`` (reorged out); the tip becomes its parent."""
        def fill(wb: Any) -> None:
            wb.delete(b"H" + struct.pack(">I", height))
            wb.put(_TIP, struct.pack(">I", height - 1) + parent_hash)
        self._write("the tower's tip", fill)

    # --- lookups the watcher makes per transaction -----------------------------------
    def has_locator(self, locator: bytes) -> bool:
        return self.db.get(b"L" + locator) is not None

    def sweeps_spending(self, txid: bytes) -> list[Sweep]:
        out = []
        for key, value in self.db.iterator(prefix=b"s" + txid):
            out.append(Sweep(key[1:37], key[37:73], struct.unpack(">Q", key[73:81])[0], value))
        return out

    def appointments_at(self, locator: bytes) -> list[Appointment]:
        out = []
        for key, value in self.db.iterator(prefix=b"a" + locator):
            out.append(_appointment_of(locator, key[17:50], value))
        return out

    def channel(self, funding: bytes) -> dict[str, Any] | None:
        raw = self.db.get(b"c" + funding)
        return json.loads(raw) if raw else None

    def penalty_breach(self, penalty_txid: bytes) -> bytes | None:
        result: bytes | None = self.db.get(b"P" + penalty_txid)
        return result

    # --- Electrum sweeps ---------------------------------------------------------------
    def register_channel(self, funding: bytes, address: str) -> None:
        if self.db.get(b"c" + funding) is not None:
            return
        self._write("a channel", lambda wb: wb.put(
            b"c" + funding, json.dumps({"address": address, "max_ctn": 0}).encode()),
            {"channels": 1})

    def max_ctn(self, funding: bytes) -> int:
        channel = self.channel(funding)
        return int(channel["max_ctn"]) if channel else 0

    def has_sweep(self, funding: bytes, ctn: int, prevout_: bytes) -> bool:
        return self.db.get(_sweep_key(funding, ctn, prevout_)) is not None

    def count_refusal(self) -> None:
        """A request refused for a full quota (shown by `appliance tower status`)."""
        self._write("a counter", lambda wb: None, {"refused_full": 1})

    def add_sweep(self, funding: bytes, ctn: int, prevout_: bytes, raw_tx: bytes) -> None:
        channel = self.channel(funding)
        key = _sweep_key(funding, ctn, prevout_)
        deltas = {"channels": int(channel is None), "sweeps": int(self.db.get(key) is None)}
        channel = channel or {"address": "", "max_ctn": 0}
        channel["max_ctn"] = max(int(channel["max_ctn"]), ctn)

        def fill(wb: Any) -> None:
            wb.put(key, raw_tx)
            wb.put(b"S" + funding + prevout_ + struct.pack(">Q", ctn), b"")
            wb.put(b"L" + prevout_[:16], b"")
            wb.put(b"c" + funding, json.dumps(channel).encode())
        self._write("a sweep", fill, deltas)

    def update_channel(self, funding: bytes, **fields: Any) -> None:
        channel = self.channel(funding)
        if channel is None:
            return
        channel.update(fields)
        self._write("a channel", lambda wb: wb.put(b"c" + funding, json.dumps(channel).encode()))

    def channels(self) -> Iterator[tuple[bytes, dict[str, Any]]]:
        for key, value in self.db.iterator(prefix=b"c"):
            yield key[1:], json.loads(value)

    def drop_channel(self, funding: bytes) -> int:
        """Delete a closed channel and its sweeps; returns how many sweeps went."""
        keys = [key for key, _ in self.db.iterator(prefix=b"S" + funding)]

        def fill(wb: Any) -> None:
            for key in keys:
                prevout_, ctn = key[37:73], key[73:81]
                wb.delete(key)
                wb.delete(b"s" + prevout_ + funding + ctn)
                if not self._other_waiters(prevout_[:16], skip_funding=funding):
                    wb.delete(b"L" + prevout_[:16])
            wb.delete(b"c" + funding)
        self._write("a closed channel", fill, {"sweeps": -len(keys), "channels": -1})
        return len(keys)

    def _other_waiters(self, locator: bytes, *, skip_funding: bytes | None = None,
                       skip_user: bytes | None = None) -> bool:
        """Whether anything but the entries being deleted still waits on ``locator``."""
        for key in self.db.iterator(prefix=b"s" + locator, include_value=False):
            if key[37:73] != skip_funding:
                return True
        for key in self.db.iterator(prefix=b"a" + locator, include_value=False):
            if key[17:50] != skip_user:
                return True
        return False

    # --- TEOS users and appointments ---------------------------------------------------
    def user(self, user_id: bytes) -> User | None:
        raw = self.db.get(b"u" + user_id)
        return None if raw is None else _user_of(user_id, raw)

    def put_user(self, user: User) -> None:
        new = self.db.get(b"u" + user.user_id) is None
        self._write("a user", lambda wb: wb.put(b"u" + user.user_id, _user_value(user)),
                    {"users": int(new)})

    def appointment(self, locator: bytes, user_id: bytes) -> Appointment | None:
        raw = self.db.get(b"a" + locator + user_id)
        return None if raw is None else _appointment_of(locator, user_id, raw)

    @staticmethod
    def _put_appointment(wb: Any, a: Appointment) -> None:
        """The appointment and its two index keys (by user, and the locator marker)."""
        wb.put(b"a" + a.locator + a.user, _APPOINTMENT.pack(a.to_self_delay, a.start_block) + a.blob)
        wb.put(b"x" + a.user + a.locator, b"")
        wb.put(b"L" + a.locator, b"")

    def put_appointment(self, appointment: Appointment, user: User) -> None:
        """Store (or replace) an appointment and the user's new slot count, atomically."""
        new = self.db.get(b"a" + appointment.locator + appointment.user) is None

        def fill(wb: Any) -> None:
            self._put_appointment(wb, appointment)
            wb.put(b"u" + user.user_id, _user_value(user))
        self._write("an appointment", fill, {"appointments": int(new)})

    def import_appointments(self, appointments: Iterable[Appointment], user: User) -> int:
        """Many new appointments of one user in batches of 10,000 (a restore, or the
        benchmark's million); synced once per batch. Returns how many were written."""
        written = 0
        batch: list[Appointment] = []

        def flush() -> None:
            def fill(wb: Any) -> None:
                for a in batch:
                    self._put_appointment(wb, a)
            self._write("appointments", fill, {"appointments": len(batch)})
            batch.clear()

        for appointment in appointments:
            batch.append(appointment)
            written += 1
            if len(batch) == 10_000:
                flush()
        flush()
        self.put_user(user)
        return written

    def delete_appointment(self, locator: bytes, user_id: bytes) -> None:
        if self.db.get(b"a" + locator + user_id) is None:
            return

        def fill(wb: Any) -> None:
            wb.delete(b"a" + locator + user_id)
            wb.delete(b"x" + user_id + locator)
            if not self._other_waiters(locator, skip_user=user_id):
                wb.delete(b"L" + locator)
        self._write("an appointment's removal", fill, {"appointments": -1})

    def user_locators(self, user_id: bytes) -> list[bytes]:
        return [key[34:] for key, _ in self.db.iterator(prefix=b"x" + user_id)]

    def users(self) -> Iterator[User]:
        for key, raw in self.db.iterator(prefix=b"u"):
            yield _user_of(key[1:], raw)

    def drop_user(self, user_id: bytes) -> int:
        locators = self.user_locators(user_id)
        for locator in locators:
            self.delete_appointment(locator, user_id)
        self._write("a user's removal", lambda wb: wb.delete(b"u" + user_id), {"users": -1})
        return len(locators)

    # --- trackers (responses) ---------------------------------------------------------
    def tracker(self, breach_txid: bytes) -> dict[str, Any] | None:
        raw = self.db.get(b"k" + breach_txid)
        return json.loads(raw) if raw else None

    def put_tracker(self, breach_txid: bytes, tracker: dict[str, Any]) -> None:
        new = self.db.get(b"k" + breach_txid) is None

        def fill(wb: Any) -> None:
            wb.put(b"k" + breach_txid, json.dumps(tracker).encode())
            for penalty in tracker["penalties"]:
                wb.put(b"P" + hex_str_to_hash(penalty["txid"]), breach_txid)
        self._write("a tracker", fill, {"trackers": int(new)})

    def trackers(self) -> Iterator[tuple[bytes, dict[str, Any]]]:
        for key, value in self.db.iterator(prefix=b"k"):
            yield key[1:], json.loads(value)

    def trackers_at(self, locator: bytes) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """Trackers of breaches whose txid starts with ``locator``."""
        for key, value in self.db.iterator(prefix=b"k" + locator):
            yield key[1:], json.loads(value)

    # --- counters ------------------------------------------------------------------------
    def stored_counts(self) -> dict[str, int]:
        """What the counters count, counted by scanning the keys (the soak and tests
        check the counters against it; a full scan, not for the request path)."""
        prefixes = {"sweeps": b"s", "appointments": b"a", "channels": b"c", "users": b"u",
                    "trackers": b"k"}
        return {name: sum(1 for _ in self.db.iterator(prefix=p, include_value=False))
                for name, p in prefixes.items()}

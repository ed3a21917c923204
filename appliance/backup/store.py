"""The backup agent's storage: per-stream append-only versioned logs and snapshots, in files.

Layout (``docs/backup.md`` has the byte formats)::

    <root>/streams/<stream id, 64 hex>/meta.json      owner key, kind
    <root>/streams/<stream id>/snap-<generation>       a snapshot: header + ciphertext
    <root>/streams/<stream id>/log-<generation>        records appended after that snapshot

Why plain files and not LevelDB: every acknowledged write must be on the card before the
ack, so each one costs a sync whatever the engine. An append-only file costs one write
and one ``fdatasync`` of the pages it touched; LevelDB would sync its own WAL and later
rewrite the same bytes again in compactions (write amplification on an SD card), and it
cannot rename a finished snapshot into place atomically. Ciphertext does not compress or
index, so nothing is lost by not having a database.

Crash safety:

* An append is one ``write`` with ``O_APPEND`` then ``fdatasync``; the caller acks only
  after this returns. Each record carries a CRC-32; on open a torn or corrupt tail (power
  cut mid-write: never acknowledged) is truncated away, nothing before it is touched.
* A snapshot streams into a temporary file; ``commit`` fsyncs it, creates the next
  generation's empty log, renames the snapshot into place and fsyncs the directory. The
  newest generation with a snapshot file is the current one, so a crash at any point
  leaves either the old generation or the new one whole. Older generations go after.
* ``equal version = replace the last write`` is an append too: reading resolves a run of
  equal versions to its last record, so nothing is ever overwritten in place.

The store never sees plaintext: payloads are opaque bytes sealed by the client.
Not thread-safe: the server calls it from its event loop only (the export reads
immutable snapshot files and a log prefix from other threads, see :meth:`Store.capture`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..durability import DISK_FULL_TEXT, fsync_dir, is_disk_full
from ..identity import write_secret_file

__all__ = [
    "KINDS",
    "LOG_HEADER",
    "SNAP_HEADER",
    "SNAP_MAGIC",
    "AppendResult",
    "Capture",
    "Record",
    "SnapshotWriter",
    "Store",
    "StoreError",
    "StreamInfo",
]

#: stream kinds: a Core Lightning database (snapshot + SQL log) or a generic versioned file
KINDS = ("cln", "file")
#: log record header: payload length, version, CRC-32 of (length, version, payload)
LOG_HEADER = struct.Struct(">III")
SNAP_MAGIC = b"HRTHSNP1"
#: snapshot header: magic, version, CRC-32 of the payload
SNAP_HEADER = struct.Struct(">8sII")
_U32 = 1 << 32
_STREAM_RE = re.compile(r"[0-9a-f]{64}")
_GEN_RE = re.compile(r"(snap|log)-(\d{10})")
#: one record at most; a CLN batch is a few KiB, a large one a few hundred
MAX_RECORD = 64 * 1024 * 1024


class StoreError(ValueError):
    """A refused request; ``code`` is what the wire protocol reports (docs/backup.md)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until done: a short write is followed by one that says why (ENOSPC)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


@dataclass(frozen=True)
class Record:
    version: int
    offset: int  # of the payload in the log file
    size: int


@dataclass(frozen=True)
class AppendResult:
    version: int
    replaced: bool  # an equal version: this record replaces the previous one
    snapshot_wanted: bool  # the log outgrew the snapshot: upload a fresh one (compaction)


@dataclass
class _Generation:
    number: int
    snap_version: int
    snap_size: int  # payload bytes
    log_size: int = 0  # file bytes (headers included)
    records: list[Record] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return SNAP_HEADER.size + self.snap_size + self.log_size


@dataclass
class _Stream:
    sid: str
    path: Path
    owner: str
    kind: str
    generations: list[_Generation]  # oldest first; the last is current
    last_write: float = 0.0
    log_fd: int = -1

    @property
    def current(self) -> _Generation:
        return self.generations[-1]

    @property
    def version(self) -> int:
        cur = self.current
        return cur.records[-1].version if cur.records else cur.snap_version

    @property
    def bytes(self) -> int:
        return sum(g.bytes for g in self.generations)


@dataclass(frozen=True)
class StreamInfo:
    stream: str
    kind: str
    owner: str
    version: int
    generation: int
    generations: list[int]
    snapshot_bytes: int
    log_bytes: int
    records: int
    bytes: int
    last_write: float

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class Capture:
    """A point-in-time view of one stream's current generation: open file descriptors
    and lengths. Snapshot files never change once named and the log only grows, so the
    bytes behind it stay readable (from any thread) until :meth:`close`."""

    info: StreamInfo
    snap_version: int
    snap_fd: int
    snap_size: int
    log_fd: int
    log_size: int
    records: list[Record]  # resolved: a run of equal versions is its last record

    def read_snapshot(self, chunk: int = 1 << 16) -> Iterator[bytes]:
        yield from _pread_range(self.snap_fd, SNAP_HEADER.size, self.snap_size, chunk)

    def read_record(self, record: Record) -> bytes:
        return b"".join(_pread_range(self.log_fd, record.offset, record.size, 1 << 20))

    def close(self) -> None:
        for fd in (self.snap_fd, self.log_fd):
            os.close(fd)


def _pread_range(fd: int, offset: int, size: int, chunk: int) -> Iterator[bytes]:
    end = offset + size
    while offset < end:
        data = os.pread(fd, min(chunk, end - offset), offset)
        if not data:
            raise OSError(f"backup file shorter than recorded ({offset} of {end} bytes)")
        offset += len(data)
        yield data


def _record_crc(length: int, version: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack(">II", length, version)))


def resolve(records: list[Record]) -> list[Record]:
    """Apply 'equal version replaces the previous write' to a log's records."""
    out: list[Record] = []
    for rec in records:
        if out and out[-1].version == rec.version:
            out[-1] = rec
        else:
            out.append(rec)
    return out


class SnapshotWriter:
    """A snapshot being uploaded: bytes go to a temporary file until :meth:`commit`."""

    def __init__(self, store: Store, stream: _Stream | None, sid: str, owner: str, kind: str,
                 version: int, size: int, carry: bool = False) -> None:
        self._store = store
        self._stream = stream
        self.sid, self.owner, self.kind, self.version, self.size = sid, owner, kind, version, size
        self.carry = carry
        self.path = store.root / "streams" / sid
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._tmp = self.path / f".upload-{os.getpid()}-{id(self):x}"
        self._fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(self._fd, SNAP_HEADER.pack(SNAP_MAGIC, version, 0))
        except OSError:
            os.close(self._fd)
            self._tmp.unlink(missing_ok=True)
            raise
        self._crc = 0
        self.received = 0
        self._done = False

    def write(self, data: bytes) -> None:
        if self.received + len(data) > self.size:
            raise StoreError("bad-request", f"snapshot longer than the announced {self.size} bytes")
        try:
            _write_all(self._fd, data)
        except OSError as exc:
            self.abort()
            raise self._store._failed(exc, "a snapshot") from None
        self._crc = zlib.crc32(data, self._crc)
        self.received += len(data)

    def commit(self) -> StreamInfo:
        if self.received != self.size:
            raise StoreError("bad-request", f"snapshot has {self.received} of {self.size} bytes")
        try:
            os.pwrite(self._fd, SNAP_HEADER.pack(SNAP_MAGIC, self.version, self._crc), 0)
            os.fsync(self._fd)
        except OSError as exc:
            self.abort()
            raise self._store._failed(exc, "a snapshot") from None
        os.close(self._fd)
        self._done = True
        try:
            info = self._store._install(self, self._tmp)
        except OSError as exc:
            self._tmp.unlink(missing_ok=True)
            raise self._store._failed(exc, "a snapshot") from None
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        self._store.disk_full = False
        return info

    def abort(self) -> None:
        if not self._done:
            self._done = True
            os.close(self._fd)
            self._tmp.unlink(missing_ok=True)


class Store:
    def __init__(self, root: Path, *, quota_bytes: int, file_versions: int = 3,
                 compact_min_bytes: int = 1 << 20) -> None:
        self.root = root
        self.quota_bytes = quota_bytes
        self.file_versions = max(1, file_versions)
        self.compact_min_bytes = compact_min_bytes
        (root / "streams").mkdir(mode=0o700, parents=True, exist_ok=True)
        self._streams: dict[str, _Stream] = {}
        self.repaired = 0  # torn log tails truncated at open
        #: the last write failed for a full disk (cleared by the next one that lands)
        self.disk_full = False
        for entry in sorted((root / "streams").iterdir()):
            if _STREAM_RE.fullmatch(entry.name) and entry.is_dir():
                stream = self._load(entry)
                if stream is not None:
                    self._streams[stream.sid] = stream

    # --- opening -----------------------------------------------------------------------------
    def _load(self, path: Path) -> _Stream | None:
        for tmp in path.glob(".upload-*"):
            tmp.unlink()  # an upload a crash interrupted: never acknowledged
        try:
            meta = json.loads((path / "meta.json").read_text())
        except (FileNotFoundError, ValueError):
            meta = None
        snaps = sorted(int(m.group(2)) for p in path.iterdir()
                       if (m := _GEN_RE.fullmatch(p.name)) and m.group(1) == "snap")
        if meta is None or not snaps:
            # Created but never completed a first snapshot: nothing was acknowledged.
            for p in path.iterdir():
                p.unlink()
            path.rmdir()
            return None
        for p in path.iterdir():  # logs of a generation whose snapshot never landed
            m = _GEN_RE.fullmatch(p.name)
            if m and m.group(1) == "log" and int(m.group(2)) > snaps[-1]:
                p.unlink()
        gens = [self._load_generation(path, n) for n in snaps]
        stream = _Stream(path.name, path, str(meta["owner"]), str(meta["kind"]), gens)
        stream.last_write = (path / _name("log", snaps[-1])).stat().st_mtime
        stream.log_fd = os.open(path / _name("log", snaps[-1]), os.O_WRONLY | os.O_APPEND)
        return stream

    def _load_generation(self, path: Path, number: int) -> _Generation:
        with open(path / _name("snap", number), "rb") as fh:
            magic, version, _crc = SNAP_HEADER.unpack(fh.read(SNAP_HEADER.size))
            size = os.fstat(fh.fileno()).st_size - SNAP_HEADER.size
        if magic != SNAP_MAGIC:
            raise StoreError("corrupt", f"{path.name}: snapshot {number} has a bad header")
        gen = _Generation(number, version, size)
        log_path = path / _name("log", number)
        fd = os.open(log_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            end = os.fstat(fd).st_size
            offset = 0
            while offset + LOG_HEADER.size <= end:
                length, ver, crc = LOG_HEADER.unpack(os.pread(fd, LOG_HEADER.size, offset))
                start = offset + LOG_HEADER.size
                if length > MAX_RECORD or start + length > end:
                    break
                if _record_crc(length, ver, os.pread(fd, length, start)) != crc:
                    break
                gen.records.append(Record(ver, start, length))
                offset = start + length
            if offset != end:
                os.ftruncate(fd, offset)  # a torn tail: written, never acknowledged
                os.fsync(fd)
                self.repaired += 1
            gen.log_size = offset
        finally:
            os.close(fd)
        return gen

    def close(self) -> None:
        for stream in self._streams.values():
            if stream.log_fd >= 0:
                os.close(stream.log_fd)
                stream.log_fd = -1

    # --- queries ---------------------------------------------------------------------------------
    def info(self, sid: str) -> StreamInfo | None:
        stream = self._streams.get(sid)
        return None if stream is None else self._info(stream)

    def _info(self, s: _Stream) -> StreamInfo:
        cur = s.current
        return StreamInfo(s.sid, s.kind, s.owner, s.version, cur.number,
                          [g.number for g in s.generations], cur.snap_size, cur.log_size,
                          len(cur.records), s.bytes, s.last_write)

    def streams(self, owner: str | None = None) -> list[StreamInfo]:
        return [self._info(s) for s in self._streams.values() if owner is None or s.owner == owner]

    def usage(self, owner: str) -> int:
        return sum(s.bytes for s in self._streams.values() if s.owner == owner)

    def owners(self) -> set[str]:
        return {s.owner for s in self._streams.values()}

    @property
    def total_bytes(self) -> int:
        return sum(s.bytes for s in self._streams.values())

    @property
    def last_write(self) -> float:
        return max((s.last_write for s in self._streams.values()), default=0.0)

    # --- writes ----------------------------------------------------------------------------------
    def append(self, owner: str, sid: str, version: int, payload: bytes) -> AppendResult:
        """Append one record; on return it is on the card (acknowledge only then)."""
        stream = self._writable(owner, sid)
        if not 0 <= version < _U32:
            raise StoreError("bad-request", "version must be a u32")
        last = stream.version
        replaced = version == last
        if not replaced and version != (last + 1) % _U32:
            raise StoreError("gap", f"version {version} does not follow {last}: upload a snapshot")
        if len(payload) > MAX_RECORD:
            raise StoreError("too-large", f"a record is at most {MAX_RECORD} bytes")
        size = LOG_HEADER.size + len(payload)
        used = self.usage(owner)
        if used + size > self.quota_bytes:
            raise StoreError("quota", f"quota exceeded: {used + size} of {self.quota_bytes} bytes; "
                             "upload a snapshot to compact, or raise backup.quota_mib")
        cur = stream.current
        data = LOG_HEADER.pack(len(payload), version, _record_crc(len(payload), version, payload)) + payload
        try:
            _write_all(stream.log_fd, data)
            os.fdatasync(stream.log_fd)
        except OSError as exc:
            # Leave no partial record behind to confuse the next append: the file ends
            # where memory says it does.
            os.truncate(stream.path / _name("log", cur.number), cur.log_size)
            raise self._failed(exc, "a record") from None
        self.disk_full = False
        cur.records.append(Record(version, cur.log_size + LOG_HEADER.size, len(payload)))
        cur.log_size += len(data)
        stream.last_write = time.time()
        return AppendResult(version, replaced, self._wants_snapshot(stream))

    def _failed(self, exc: OSError, what: str) -> StoreError:
        """A failed write as the refusal the client reads; nothing of it was kept."""
        if is_disk_full(exc):
            self.disk_full = True
            return StoreError("disk-full", f"{DISK_FULL_TEXT} ({what} was not stored)")
        return StoreError("write-failed", f"{what} was not stored: {exc}")

    def room(self) -> int:
        """Free bytes on the filesystem that holds the backups."""
        return shutil.disk_usage(self.root).free

    def _wants_snapshot(self, stream: _Stream) -> bool:
        cur = stream.current
        return stream.kind == "cln" and cur.log_size > max(cur.snap_size, self.compact_min_bytes)

    def _writable(self, owner: str, sid: str) -> _Stream:
        stream = self._streams.get(sid)
        if stream is None:
            raise StoreError("no-stream", f"no stream {sid[:16]}…: upload a snapshot first")
        if stream.owner != owner:
            raise StoreError("forbidden", "this stream belongs to another client")
        return stream

    def begin_snapshot(self, owner: str, sid: str, kind: str, version: int, size: int, *,
                       takeover: bool = False, carry: bool = False) -> SnapshotWriter:
        """Start a new generation. ``carry``: the snapshot is of version ``version``, taken
        while appends went on; the records after ``version`` move into the new log when it
        is committed (a background compaction that never holds up the writer)."""
        if not _STREAM_RE.fullmatch(sid):
            raise StoreError("bad-request", "stream must be 64 lower-case hex digits")
        if kind not in KINDS:
            raise StoreError("bad-request", f"kind must be one of {', '.join(KINDS)}")
        if not 0 <= version < _U32 or size < 0:
            raise StoreError("bad-request", "version must be a u32 and size >= 0")
        stream = self._streams.get(sid)
        freed = 0
        if stream is not None:
            if stream.kind != kind:
                raise StoreError("bad-request", f"stream is of kind {stream.kind}, not {kind}")
            if stream.owner != owner and not takeover:
                raise StoreError("forbidden", "this stream belongs to another client")
            kept = 1 if kind == "cln" else self.file_versions
            freed = sum(g.bytes for g in stream.generations[:len(stream.generations) - kept + 1])
            if stream.owner != owner:
                freed = 0  # the bytes move to the new owner's account
        if carry and (stream is None or stream.owner != owner or kind != "cln"):
            raise StoreError("bad-request", "carry needs an existing cln stream of this client")
        used = self.usage(owner) - freed
        if used + SNAP_HEADER.size + size > self.quota_bytes:
            raise StoreError("quota", f"quota exceeded: a {size}-byte snapshot needs "
                             f"{used + SNAP_HEADER.size + size} of {self.quota_bytes} bytes")
        try:
            return SnapshotWriter(self, stream, sid, owner, kind, version, size, carry)
        except OSError as exc:
            raise self._failed(exc, "a snapshot") from None

    def _install(self, w: SnapshotWriter, tmp: Path) -> StreamInfo:
        stream = self._streams.get(w.sid)
        number = stream.current.number + 1 if stream is not None else 1
        carried = self._carried(stream, w) if w.carry else []
        log_path = w.path / _name("log", number)
        owner_changes = stream is None or stream.owner != w.owner
        fd = -1
        try:
            if owner_changes:
                write_secret_file(w.path / "meta.json",
                                  json.dumps({"owner": w.owner, "kind": w.kind}).encode())
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
            records, log_size = self._copy_carried(stream, carried, fd)
            os.fsync(fd)
        except OSError:
            # Nothing changed: the new log goes, and the owner on disk is the one in memory.
            if fd >= 0:
                os.close(fd)
            log_path.unlink(missing_ok=True)
            if owner_changes and stream is not None:
                with contextlib.suppress(OSError):
                    write_secret_file(w.path / "meta.json", json.dumps(
                        {"owner": stream.owner, "kind": stream.kind}).encode())
            raise
        os.rename(tmp, w.path / _name("snap", number))
        fsync_dir(w.path)  # from here the new generation is the current one
        gen = _Generation(number, w.version, w.size, log_size, records)
        if stream is None:
            stream = _Stream(w.sid, w.path, w.owner, w.kind, [gen], log_fd=fd)
            self._streams[w.sid] = stream
            fsync_dir(w.path.parent)
        else:
            os.close(stream.log_fd)
            stream.log_fd = fd
            stream.owner = w.owner
            stream.generations.append(gen)
            kept = 1 if stream.kind == "cln" else self.file_versions
            for old in stream.generations[:-kept]:
                (w.path / _name("snap", old.number)).unlink(missing_ok=True)
                (w.path / _name("log", old.number)).unlink(missing_ok=True)
            del stream.generations[:-kept]
            fsync_dir(w.path)
        stream.last_write = time.time()
        return self._info(stream)

    @staticmethod
    def _copy_carried(stream: _Stream | None, carried: list[Record], fd: int
                      ) -> tuple[list[Record], int]:
        """The carried records, byte for byte, into the new log ``fd``."""
        records: list[Record] = []
        log_size = 0
        if carried:
            assert stream is not None
            src = os.open(stream.path / _name("log", stream.current.number), os.O_RDONLY)
            try:
                for rec in carried:  # header and sealed payload, byte for byte
                    raw = os.pread(src, LOG_HEADER.size + rec.size, rec.offset - LOG_HEADER.size)
                    _write_all(fd, raw)
                    records.append(Record(rec.version, log_size + LOG_HEADER.size, rec.size))
                    log_size += len(raw)
            finally:
                os.close(src)
        return records, log_size

    def _carried(self, stream: _Stream | None, w: SnapshotWriter) -> list[Record]:
        """The current log's records after version ``w.version`` (checked at commit time:
        the log grew during the upload)."""
        assert stream is not None
        cur = stream.current
        resolved = resolve(cur.records)
        if cur.snap_version == w.version:
            return resolved
        for i, rec in enumerate(resolved):
            if rec.version == w.version:
                return resolved[i + 1:]
        raise StoreError("gap", f"version {w.version} is not in the current log: "
                         "the snapshot is stale, take a new one")

    # --- reads ------------------------------------------------------------------------------------
    def capture(self, sid: str, generation: int | None = None) -> Capture:
        stream = self._streams.get(sid)
        if stream is None:
            raise StoreError("no-stream", f"no stream {sid[:16]}…")
        gens = {g.number: g for g in stream.generations}
        gen = stream.current if generation is None else gens.get(generation)
        if gen is None:
            raise StoreError("no-generation", f"generation {generation} is not kept "
                             f"(kept: {', '.join(map(str, gens))})")
        snap_fd = os.open(stream.path / _name("snap", gen.number), os.O_RDONLY)
        log_fd = os.open(stream.path / _name("log", gen.number), os.O_RDONLY)
        return Capture(self._info(stream), gen.snap_version, snap_fd, gen.snap_size, log_fd,
                       gen.log_size, resolve(gen.records))


def _name(kind: str, number: int) -> str:
    return f"{kind}-{number:010d}"

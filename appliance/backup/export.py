"""One consistent file holding every stream's current generation, for the USB backup.

The file is an uncompressed POSIX tar (ciphertext does not compress)::

    index.json                         {"format": "hearth-backup-export", "version": 1,
                                        "created": unix time, "streams": [StreamInfo...]}
    streams/<id>/meta.json             {"owner": client key hex, "kind": "cln" | "file"}
    streams/<id>/snap-<generation>     the snapshot file, byte for byte (docs/backup.md)
    streams/<id>/log-<generation>      the log up to the captured length

The point in time is one pass over the streams on the event loop (open descriptors and
lengths, no copying); the copy then runs in a thread while writes go on, because a
snapshot file never changes once named and a log only grows. Written to a temporary
name, fsynced and renamed, mode 0600: a reader sees the old export or the new one.
Restoring it is unpacking ``streams/`` into ``<data_dir>/backup/`` (``appliance restore``).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

from ..durability import atomic_file
from .store import SNAP_HEADER, Capture, Store, _pread_range

__all__ = ["EXPORT_FORMAT", "ExportError", "capture_all", "restore_export", "write_export"]

EXPORT_FORMAT = "hearth-backup-export"
_MEMBER_RE = re.compile(r"streams/[0-9a-f]{64}/(meta\.json|snap-\d{10}|log-\d{10})")


class ExportError(ValueError):
    """Not an export this code wrote, or one that would overwrite backups."""


class _RangeReader(io.RawIOBase):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def capture_all(store: Store) -> list[Capture]:
    """The point in time: call on the event loop (the store is not thread-safe)."""
    return [store.capture(info.stream) for info in store.streams()]


def _add(tar: tarfile.TarFile, name: str, size: int, chunks: Iterator[bytes], mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, int(mtime)
    tar.addfile(info, io.BufferedReader(_RangeReader(chunks)))


def write_export(captures: list[Capture], path: Path) -> Path:
    """Write the export from ``captures`` (then closes them); safe to run in a thread."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = time.time()
    try:
        with atomic_file(path, 0o600) as fh:
            with tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
                index = json.dumps({"format": EXPORT_FORMAT, "version": 1, "created": now,
                                    "streams": [c.info.as_dict() for c in captures]},
                                   indent=1).encode()
                _add(tar, "index.json", len(index), iter([index]), now)
                for c in captures:
                    base = f"streams/{c.info.stream}"
                    meta = json.dumps({"owner": c.info.owner, "kind": c.info.kind}).encode()
                    _add(tar, f"{base}/meta.json", len(meta), iter([meta]), now)
                    gen = f"{c.info.generation:010d}"
                    snap_len = SNAP_HEADER.size + c.snap_size
                    _add(tar, f"{base}/snap-{gen}", snap_len,
                         _pread_range(c.snap_fd, 0, snap_len, 1 << 16), c.info.last_write)
                    _add(tar, f"{base}/log-{gen}", c.log_size,
                         _pread_range(c.log_fd, 0, c.log_size, 1 << 16), c.info.last_write)
    finally:
        for c in captures:
            c.close()
    return path


def restore_export(export: Path | io.BufferedIOBase, root: Path) -> int:
    """Put an export's streams back under ``root`` (``<data_dir>/backup``) on a box whose
    backup service is stopped; returns the number of streams. Refuses when ``root`` already
    holds streams, and any member outside ``streams/<id>/{meta.json,snap-N,log-N}``. The
    service repairs and checks the files when it next opens them."""
    streams = root / "streams"
    if streams.is_dir() and any(streams.iterdir()):
        raise ExportError(f"{streams} already holds backups: not overwriting them")
    staging = root / ".streams.restoring"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700, parents=True)
    count = 0
    try:
        with (tarfile.open(export) if isinstance(export, Path) else tarfile.open(fileobj=export)) as tar:
            index = tar.extractfile("index.json")
            if index is None or json.load(index).get("format") != EXPORT_FORMAT:
                raise ExportError("not a Hearth backup-agent export")
            for member in tar.getmembers():
                if member.name == "index.json":
                    continue
                if not member.isfile() or not _MEMBER_RE.fullmatch(member.name):
                    raise ExportError(f"unexpected member {member.name!r} in the export")
                target = staging / member.name.removeprefix("streams/")
                target.parent.mkdir(mode=0o700, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(src, out)
                    out.flush()
                    os.fsync(out.fileno())
                count += member.name.endswith("meta.json")
        if streams.exists():
            streams.rmdir()
        os.rename(staging, streams)
    except (tarfile.TarError, ValueError, KeyError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ExportError(f"bad export: {exc}") from None
    return count

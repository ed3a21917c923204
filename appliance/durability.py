"""The durability contract's shared vocabulary: what a failed write is, and when it means
"the disk is full".

Every store that acknowledges writes (the tower's LevelDB, the backup agent's files, the
indexer's wallet list) raises :class:`DiskFull` for ENOSPC/EDQUOT, and
:class:`WriteFailed` for any other failed write, *after* making its memory agree with
the disk again. Callers turn these into their protocol's explicit error (TEOS error
code, JSON-RPC error, backup ``disk-full`` code) and never into an acknowledgement.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["DISK_FULL_TEXT", "REOPEN_FREE_BYTES", "DiskFull", "WriteFailed", "atomic_file",
           "fsync_dir", "has_room", "is_disk_full", "replace_durably", "write_atomic",
           "write_error"]

#: Free bytes a LevelDB needs before it is reopened after a failed write: the reopen writes
#: the old log out as a table (up to its write buffer, a few MiB) and a new manifest.
#: (After a failed append LevelDB's log writer is out of step with its file, and records
#: appended later can be lost at the next open: a store reopens on a fresh log first.)
REOPEN_FREE_BYTES = 8 << 20

#: What the owner reads (OLED, client messages): the cause and the cure in one line.
DISK_FULL_TEXT = "the box's disk is full: nothing new is stored until space is freed"

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# LevelDB (via plyvel) reports errors as text only: "IO error: <file>: No space left on device".
_FULL_TEXTS = ("no space left on device", "disk quota exceeded")


class WriteFailed(OSError):
    """A write did not reach the disk; nothing of it was acknowledged or kept in memory."""

    @property
    def text(self) -> str:
        """The message without OSError's ``[Errno n]`` prefix."""
        return self.strerror or str(self)


class DiskFull(WriteFailed):
    """A write failed because the filesystem is full (ENOSPC or quota)."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(errno.ENOSPC, f"{DISK_FULL_TEXT}{f' ({detail})' if detail else ''}")


def has_room(path: Path, need: int) -> bool:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize >= need


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, DiskFull):
        return True
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        return True
    text = str(exc).lower()
    return any(t in text for t in _FULL_TEXTS)


def write_error(exc: BaseException, what: str) -> WriteFailed:
    """The contract's exception for ``exc`` raised while writing ``what``."""
    if is_disk_full(exc):
        return DiskFull(what)
    return WriteFailed(errno.EIO, f"could not write {what}: {exc}")


def fsync_dir(directory: Path) -> None:
    """Make the renames and creations in ``directory`` durable."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def replace_durably(tmp: Path, path: Path) -> None:
    """Publish the finished file ``tmp`` as ``path``: fsync it, rename, fsync the directory."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_file(path: Path, mode: int = 0o600) -> Iterator[BinaryIO]:
    """A file to write that appears as ``path`` whole or not at all, with ``mode``.

    The temp file sits in the same directory (rename is atomic within one filesystem),
    is created with O_EXCL|O_NOFOLLOW and the final mode (a secret is never readable by
    others, not even briefly; a planted symlink is never written through), and is fsynced
    before the rename; the directory is fsynced after it. On any error the temp file goes
    and ``path`` keeps its old content."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a leftover from a crash
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            if stat.S_IMODE(os.fstat(fh.fileno()).st_mode) & mode != mode:
                # The umask narrowed the mode given to open (a FAT stick, which cannot
                # chmod, reports its mount's wider mode and is left alone).
                os.fchmod(fh.fileno(), mode)
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically and durably (see :func:`atomic_file`)."""
    with atomic_file(path, mode) as fh:
        fh.write(data)

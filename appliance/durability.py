"""The durability contract's shared vocabulary: what a failed write is, and when it means
"the disk is full".

Every store that acknowledges writes (the tower's LevelDB, the backup agent's files, the
indexer's wallet list) raises :class:`DiskFull` for ENOSPC/EDQUOT, and
:class:`WriteFailed` for any other failed write, *after* making its memory agree with
the disk again. Callers turn these into their protocol's explicit error (TEOS error
code, JSON-RPC error, backup ``disk-full`` code) and never into an acknowledgement.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = ["DISK_FULL_TEXT", "REOPEN_FREE_BYTES", "DiskFull", "WriteFailed", "has_room",
           "is_disk_full", "write_error"]

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

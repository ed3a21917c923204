"""A real full disk for tests: a small tmpfs mounted for the test, filled and freed on demand.

Mounting needs root (CI runs as root); :func:`small_disk` skips the test otherwise. The
filler is one file grown with ``write`` until the kernel says ENOSPC, so what the code
under test sees is the real errno at the real moment, not a mock.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = ["SmallDisk", "small_disk"]


class SmallDisk:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / ".filler"

    def fill(self, leave: int = 0) -> int:
        """Grow the filler until the disk is full (or only ``leave`` bytes are free).
        Returns the filler's size."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        chunk = b"\0" * (1 << 16)
        try:
            while True:
                room = self.free() - leave
                if room <= 0:
                    break
                try:
                    os.write(fd, chunk[:min(len(chunk), room)] if leave else chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    if len(chunk) == 1:
                        break
                    chunk = chunk[:len(chunk) // 2]  # top up the last pages too
        finally:
            os.close(fd)
        return self.filler.stat().st_size

    def release(self) -> None:
        self.filler.unlink(missing_ok=True)

    def free(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize


@contextmanager
def small_disk(path: Path, size_mib: int) -> Iterator[SmallDisk]:
    """Mount a ``size_mib`` tmpfs on ``path`` for the duration (skips without root)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0755", "tmpfs",
                           str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield SmallDisk(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)

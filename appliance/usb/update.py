"""An update bundle on a stick (``HEARTH/update/*.raucb``): copied onto the box, then verified.

The copy is what gets verified, asked about and installed: the stick may be pulled out
at any time, and a file re-read from a stick after its check could differ from what was
checked. Copies live in ``<data_dir>/update/incoming`` (the data partition, which has
the room) and are deleted once installed, refused or declined.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

from ..config import Config
from ..durability import fsync_dir
from .stick import BACKUP_DIR, StickError, explain, open_regular, real_dir

__all__ = ["UPDATE_DIR", "bundles_on", "clear_incoming", "copy_bundle", "incoming_dir"]

UPDATE_DIR = "update"


def incoming_dir(cfg: Config) -> Path:
    return cfg.service_dir("update") / "incoming"


def bundles_on(root: Path) -> list[Path]:
    """The stick's update bundles (regular names ending in .raucb), sorted by name."""
    directory = root / BACKUP_DIR / UPDATE_DIR
    real_dir(root / BACKUP_DIR)
    real_dir(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.endswith(".raucb")
                  and not p.name.startswith("."))


def copy_bundle(source: Path, cfg: Config) -> Path:
    """``source`` copied to the box (fsynced), never through a link; StickError on failure
    (a partial copy is removed)."""
    target_dir = incoming_dir(cfg)
    clear_incoming(cfg)  # one update at a time; leftovers of a power cut go too
    target_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = target_dir / source.name
    fd = open_regular(source)
    try:
        with os.fdopen(fd, "rb", closefd=True) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        with contextlib.suppress(OSError):
            target.unlink()
        if exc.errno == errno.ENOSPC:
            raise StickError("No room on the box for the update: nothing changed") from None
        raise explain(exc) from None
    fsync_dir(target_dir)
    return target


def clear_incoming(cfg: Config) -> None:
    directory = incoming_dir(cfg)
    if directory.is_dir():
        for leftover in directory.iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()

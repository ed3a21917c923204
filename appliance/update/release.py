"""The Hearth version this system slot runs.

Each slot carries its own ``/etc/hearth-release`` (``VERSION=0.1.0``, written by the image
build), so after an update or a rollback the answer is the running slot's. Outside an
image (development, tests) the installed package's version is the answer.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

__all__ = ["RELEASE_FILE", "running_version"]

RELEASE_FILE = Path("/etc/hearth-release")


def running_version(release_file: Path = RELEASE_FILE) -> str:
    """``VERSION`` from the slot's release file, else the installed hearth-appliance's."""
    try:
        text = release_file.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return importlib.metadata.version("hearth-appliance")
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "VERSION" and value.strip():
            return value.strip().strip('"')
    raise ValueError(f"{release_file}: no VERSION= line")

"""Fixtures for the status bus tests: a short run directory and scaled timings."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .util import Timings


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A fresh run directory with a short path.

    pytest's tmp_path can exceed the 107 bytes a unix socket path may have once
    ``status/<service>.sock`` is added, so these live directly under /tmp.
    """
    path = Path(tempfile.mkdtemp(prefix="hst-", dir="/tmp"))
    path.chmod(0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def t(timeout_factor: float) -> Timings:
    """Short heartbeat and staleness times (scaled by --timeout-factor on slow machines)."""
    return Timings.scaled(timeout_factor)

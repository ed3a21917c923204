"""write_atomic / atomic_file: the one atomic, durable file write."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from appliance.durability import atomic_file, write_atomic


def test_write_atomic_sets_the_mode_despite_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_atomic(tmp_path / "cert.pem", b"cert", 0o644)
    finally:
        os.umask(old)
    assert (tmp_path / "cert.pem").read_bytes() == b"cert"
    assert stat.S_IMODE((tmp_path / "cert.pem").stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["cert.pem"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    write_atomic(path, b"old")
    with pytest.raises(RuntimeError), atomic_file(path) as fh:
        fh.write(b"half")
        raise RuntimeError("disk went away")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]


def test_a_planted_symlink_at_the_temp_name_is_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / ".secret.tmp").symlink_to(victim)
    write_atomic(tmp_path / "secret", b"new")
    assert victim.read_bytes() == b"keep"
    assert (tmp_path / "secret").read_bytes() == b"new"
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600

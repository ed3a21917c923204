"""appliance.update.release.running_version: the slot's /etc/hearth-release, else the package."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from appliance.update.release import running_version


def test_release_file_wins(tmp_path: Path) -> None:
    f = tmp_path / "hearth-release"
    f.write_text("VERSION=0.1.1\nHEARTH_IMAGE_EPOCH=1\n")
    assert running_version(f) == "0.1.1"


def test_no_release_file_is_the_package_version(tmp_path: Path) -> None:
    assert running_version(tmp_path / "missing") == importlib.metadata.version("hearth-appliance")


def test_file_without_version_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "hearth-release"
    f.write_text("HEARTH_IMAGE_EPOCH=1\n")
    with pytest.raises(ValueError, match="no VERSION"):
        running_version(f)

"""Fixtures shared by the functional tests (bitcoind itself: ../conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from functional.framework.appliance import IndexerProcess, TowerProcess
from functional.framework.node import TestNode
from functional.framework.util import running


@pytest.fixture
def box_env() -> dict[str, str]:
    """HEARTH_* settings for the ``indexer`` fixture (tests parametrize it)."""
    return {}


@pytest.fixture
def indexer(tmp_path: Path, node: TestNode, timeout_factor: float, box_env: dict[str, str],
            monkeypatch: pytest.MonkeyPatch) -> Iterator[IndexerProcess]:
    """A running indexer service (Electrum server, pairing gate) on the test's bitcoind."""
    for key, value in box_env.items():
        monkeypatch.setenv(key, value)
    yield from running(IndexerProcess(tmp_path / "appliance", node, timeout_factor=timeout_factor))


@pytest.fixture
def box(indexer: IndexerProcess) -> IndexerProcess:
    """The box as a pairing client sees it: its indexer (files with other boxes override)."""
    return indexer


@pytest.fixture
def tower(tmp_path: Path, node: TestNode, timeout_factor: float) -> Iterator[TowerProcess]:
    """A running watchtower service on the test's bitcoind."""
    yield from running(TowerProcess(tmp_path / "tower", node, timeout_factor=timeout_factor))

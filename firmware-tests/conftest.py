"""Shared fixtures: a real regtest bitcoind for every test that asks for one."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # makes `functional.framework` importable

from functional.framework.node import NodeFactory, TestNode, build_cached_chain  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--timeout-factor", type=float, default=float(
        os.environ.get("HEARTH_TIMEOUT_FACTOR", "1")),
        help="scale every wait in the functional tests (e.g. 4 on a Raspberry Pi)")


@pytest.fixture(scope="session")
def timeout_factor(request: pytest.FixtureRequest) -> float:
    return float(request.config.getoption("--timeout-factor"))


@pytest.fixture(scope="session")
def bitcoind_bindir() -> Path:
    """Debian's bitcoin-knots, fetched and unpacked once by firmware-tests/tools/get-bitcoind."""
    env_dir = os.environ.get("HEARTH_BITCOIND_BINDIR")
    if env_dir:
        return Path(env_dir)
    out = subprocess.run([str(HERE / "tools" / "get-bitcoind"), "--print-bindir"],
                         check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def cached_chain(tmp_path_factory: pytest.TempPathFactory, bitcoind_bindir: Path,
                 timeout_factor: float) -> Path:
    """A 200-block regtest chain with a funded ground-truth wallet, built once per run."""
    return build_cached_chain(tmp_path_factory.mktemp("chain-cache"), bitcoind_bindir,
                              timeout_factor=timeout_factor)


@pytest.fixture
def node_factory(tmp_path: Path, bitcoind_bindir: Path, cached_chain: Path,
                 timeout_factor: float) -> Iterator[NodeFactory]:
    factory = NodeFactory(tmp_path, bitcoind_bindir, timeout_factor, cache_dir=cached_chain)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def node(node_factory: NodeFactory) -> TestNode:
    """A clean pruning regtest node (copy of the cached chain) with ZMQ and a wallet."""
    return node_factory.create()

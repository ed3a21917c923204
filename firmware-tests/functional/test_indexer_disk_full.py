"""`appliance wallet add` on a really full disk: an explicit error, nothing half-registered,
and a registration acknowledged after the space came back survives a kill -9."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from functional.framework.appliance import IndexerProcess
from functional.framework.disk import SmallDisk, small_disk
from functional.framework.node import TestNode

pytestmark = pytest.mark.node


@pytest.fixture
def indexer_on_small_disk(tmp_path: Path, node: TestNode, timeout_factor: float
                          ) -> Iterator[tuple[IndexerProcess, SmallDisk]]:
    proc = IndexerProcess(tmp_path / "appliance", node, timeout_factor=timeout_factor)
    with small_disk(tmp_path / "appliance" / "data", 32) as disk:
        proc.start()
        try:
            yield proc, disk
        finally:
            proc.kill()


def _descriptors(node: TestNode, name: str) -> list[str]:
    node.createwallet(name)
    return [d["desc"] for d in node.rpc("listdescriptors", wallet=name)["descriptors"]
            if d["desc"].startswith("wpkh(")]


def test_wallet_add_on_a_full_disk(node: TestNode,
                                   indexer_on_small_disk: tuple[IndexerProcess, SmallDisk]) -> None:
    indexer, disk = indexer_on_small_disk
    indexer.wait_synced()
    disk.fill()
    acked = []
    for i in range(20):  # the log's last page may still take a registration or two
        res = indexer.cli("wallet", "add", *_descriptors(node, f"w{i}"), check=False)
        if res.returncode != 0:
            break
        acked.append(res.stdout.split()[1])
    out = res.stderr + res.stdout
    assert res.returncode != 0, "wallets were registered on a full disk"
    assert "wallet not added" in out and "disk is full" in out, out
    # Memory agrees with the disk: only what was acknowledged is registered.
    assert sorted(w["id"] for w in indexer.wallets()) == sorted(acked)
    disk.release()
    descs = _descriptors(node, "w2")
    wid = indexer.wallet_add(*descs)
    indexer.kill()  # acknowledged: it must be there after a kill -9
    indexer.start()
    assert sorted(w["id"] for w in indexer.wallets()) == sorted([*acked, wid])

"""The tower and the indexer follow bitcoind wherever it goes, as services.

The follower's cases are tested once in test_chain_follower.py; here, what a user sees:
the tower after bitcoind came back behind it (a power cut: the blocks it had not flushed
are gone; reproduced with a datadir snapshot) never crash-loops and never says
``ready`` at a height bitcoind does not have; a rollback with no new block
(invalidateblock, reconsiderblock, preciousblock) reaches Electrum's
``headers.subscribe``, the answers and ``appliance status`` at once.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from functional.framework.appliance import IndexerProcess, ServiceProcess, TowerProcess
from functional.framework.node import TestNode
from functional.framework.util import wait_until
from functional.test_indexer_wallet import compare, fund, setup_watched

pytestmark = pytest.mark.node


def bus_status(proc: ServiceProcess, service: str) -> dict[str, Any]:
    """``service``'s snapshot on the status bus, as ``appliance status`` shows it."""
    res = proc.cli("status", "--json", check=False)
    state = json.loads(res.stdout)["services"].get(service) or {}
    return dict(state.get("status") or {})


def bus(proc: ServiceProcess, service: str) -> tuple[str, int]:
    """(phase, height) of ``service`` on the status bus."""
    status = bus_status(proc, service)
    return str(status.get("phase")), int((status.get("counters") or {}).get("height", -1))


def tower_at(tower: TowerProcess, node: TestNode) -> bool:
    st = tower.status()
    return bool(st["live"] and st["height"] == node.getblockcount()
                and st["tip"] == node.getbestblockhash())


class Sampler:
    """Reads the tower's phase and height from the status bus until stopped."""

    def __init__(self, tower: TowerProcess) -> None:
        self.tower = tower
        self.samples: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(bus(self.tower, "tower"))
            time.sleep(0.2)

    def stop(self) -> list[tuple[str, int]]:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.samples


def test_tower_follows_bitcoind_restarted_behind_it(tmp_path: Path, node: TestNode,
                                                    tower: TowerProcess) -> None:
    node.snapshot(tmp_path / "at-h")
    h = node.getblockcount()
    node.mine(5)
    wait_until(lambda: tower_at(tower, node))
    node.stop()
    wait_until(lambda: bus(tower, "tower")[0] == "degraded")  # bitcoind gone: not ready
    assert "bitcoind" in bus_status(tower, "tower")["last_error"]
    sampler = Sampler(tower)
    node.restore(tmp_path / "at-h")  # 5 blocks behind the tower
    assert node.getblockcount() == h
    wait_until(lambda: tower_at(tower, node))
    wait_until(lambda: bus(tower, "tower") == ("ready", h))
    samples = sampler.stop()
    assert bus_status(tower, "tower")["last_error"] is None  # back: the error is gone
    assert not [s for s in samples if s[0] == "ready" and s[1] > h], samples
    assert tower.process is not None and tower.process.poll() is None  # never crashed
    assert "was reorged out" in tower.log_text(since_start=True)
    node.mine(3)  # a new branch from h
    wait_until(lambda: tower_at(tower, node))


def test_tower_started_while_bitcoind_is_behind(tmp_path: Path, node: TestNode,
                                                tower: TowerProcess) -> None:
    """A power cut takes both: bitcoind restarts behind the tower's last block, the
    tower starts after it (it used to crash-loop on ``getblockheader``: Block not found)."""
    node.snapshot(tmp_path / "at-h")
    h = node.getblockcount()
    node.mine(4)
    wait_until(lambda: tower_at(tower, node))
    tower.kill()
    node.stop()
    node.restore(tmp_path / "at-h")
    tower.start()
    wait_until(lambda: tower_at(tower, node))
    assert tower.status()["height"] == h
    node.mine(2)
    wait_until(lambda: tower_at(tower, node))


def test_tower_follows_a_rollback_and_another_branch(node: TestNode, tower: TowerProcess) -> None:
    h = node.getblockcount()
    gone = node.getblockhash(h - 1)
    node.invalidateblock(gone)  # no new block: the tower is at h - 2 all the same
    wait_until(lambda: tower_at(tower, node))
    assert tower.status()["height"] == h - 2
    node.mine(3, node.new_address("bech32m"))  # a competing branch, longer
    wait_until(lambda: tower_at(tower, node))
    node.reconsiderblock(gone)  # the old branch is shorter: bitcoind stays
    node.mine(1)
    wait_until(lambda: tower_at(tower, node))


def wait_header(client: Any, height: int) -> None:
    """headers.subscribe notifications until one at ``height`` (blocks connected one by
    one notify each; a rollback notifies its new tip at once)."""
    deadline = time.monotonic() + 30
    while True:
        note = client.wait_notification("blockchain.headers.subscribe",
                                        timeout=max(0.1, deadline - time.monotonic()))
        if note["params"][0]["height"] == height:
            return


def indexer_at(indexer: IndexerProcess, node: TestNode, height: int) -> bool:
    st = indexer.status()["indexer"]
    return bool(st["height"] == height and st["tip"] == node.getbestblockhash()
                and bus(indexer, "indexer") == ("ready", height))


def test_index_rolls_back_without_a_new_block(node: TestNode, indexer: IndexerProcess) -> None:
    client, truth, _ = setup_watched(node, indexer)
    for _ in range(3):
        fund(node, "w1", ["0.1"])
        node.mine(1)
    indexer.wait_synced()
    height = node.getblockcount()
    client.call("blockchain.headers.subscribe")
    first_gone = node.getblockhash(height - 2)
    node.invalidateblock(first_gone)
    # Back in bitcoind's mempool: those not spending a coinbase that is immature again.
    assert truth.mempool()
    wait_header(client, height - 3)
    wait_until(lambda: indexer_at(indexer, node, height - 3))
    compare(client, truth)
    node.reconsiderblock(first_gone)
    wait_header(client, height)
    wait_until(lambda: indexer_at(indexer, node, height))
    compare(client, truth)


def test_index_follows_preciousblock(node: TestNode, indexer: IndexerProcess) -> None:
    """Two branches of equal work, one with a wallet payment: preciousblock flips
    between them and the payment goes from confirmed to the mempool and back."""
    client, truth, _ = setup_watched(node, indexer)
    fund(node, "w1", ["0.3"])
    a = node.mine(1)[0]
    node.invalidateblock(a)  # the payment goes back to the mempool
    b = node.generateblock(node.new_address("bech32m"), [])["hash"]  # an empty sibling
    node.reconsiderblock(a)
    height = node.getblockcount()
    client.call("blockchain.headers.subscribe")
    for want in (a, b, a, b):
        node.preciousblock(want)
        assert node.getbestblockhash() == want
        wait_until(lambda: indexer_at(indexer, node, height))
        compare(client, truth)
        assert len(truth.mempool()) == (0 if want == a else 1)

"""bitcoind sizing for the box: prune from disk, dbcache from RAM."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.node.bitcoin_conf import BitcoindLayout, render_bitcoin_conf
from appliance.node.sizing import GIB, plan_resources


@pytest.mark.parametrize(("disk_gib", "prune_min", "prune_max"), [
    (58, 20_000, 23_000),  # a 64 GB card: ~21 GiB of blocks kept
    (230, 160_000, 200 * 1024),  # a 256 GB SSD: capped
])
def test_mainnet_prune_takes_what_the_disk_spares(disk_gib: int, prune_min: int,
                                                   prune_max: int) -> None:
    plan = plan_resources("main", disk_gib * GIB, 4 * GIB, ibd=False)
    assert prune_min <= plan.prune_mib <= prune_max and not plan.warning


def test_too_small_a_disk_is_said_plainly() -> None:
    plan = plan_resources("main", 27 * GIB, 4 * GIB, ibd=False)
    assert plan.prune_mib == 550 and "too little for the main chain" in plan.warning


def test_dbcache_big_during_ibd_small_after() -> None:
    ibd = plan_resources("main", 100 * GIB, 4 * GIB, ibd=True).dbcache_mib
    after = plan_resources("main", 100 * GIB, 4 * GIB, ibd=False).dbcache_mib
    assert ibd == 1024 and after == 256
    assert plan_resources("main", 100 * GIB, 1 * GIB, ibd=False).dbcache_mib == 100


def test_auto_size_writes_planned_values(tmp_path: Path) -> None:
    cfg = load_config(None, env={}, overrides={
        "hearth": {"network": "regtest"},
        "node": {"bitcoin_dir": str(tmp_path), "auto_size": True}})
    text = render_bitcoin_conf(cfg, BitcoindLayout(ibd=True))
    prune = int(next(line for line in text.splitlines() if line.startswith("prune="))[6:])
    assert prune >= 550 and "# sized for" in text and "(initial block download)" in text
    fixed = render_bitcoin_conf(load_config(None, env={}))
    assert "prune=550" in fixed and "dbcache=300" in fixed


def test_bitcoin_conf_for_the_initial_sync_names_its_steady_dbcache() -> None:
    from appliance.node.bitcoin_conf import IBD_MARKER, leave_ibd_mode

    text = f"chain=main\n{IBD_MARKER}256  (note)\n\n[main]\ndbcache=1024\nprune=550\n"
    steady = leave_ibd_mode(text)
    assert steady is not None
    assert "dbcache=256" in steady and "dbcache=1024" not in steady
    assert IBD_MARKER not in steady and "prune=550" in steady
    assert leave_ibd_mode(steady) is None  # applied once
    assert leave_ibd_mode("dbcache=300\n") is None  # not written for the initial sync

"""Size bitcoind for the box it runs on: prune target from free disk, dbcache from RAM.

Why: an SD card or USB SSD of unknown size, and 4 GB of RAM shared with everything
else. Keeping more blocks than the minimum means fewer ``getblockfrompeer`` round trips
when a wallet is registered late, so the prune target takes what the disk can spare
after the parts that cannot be pruned (chainstate, block filters, our own services).
During initial block download a large dbcache saves hours of SD-card writes; after it,
memory goes back to the services.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Resources", "host_resources", "plan_resources"]

GIB = 1 << 30
MIB = 1 << 20

#: What cannot be pruned, per chain, in bytes (mainnet figures for 2026 with margin:
#: chainstate ~12 GB, basic block filters ~13 GB; plus logs and the indexer's LevelDB).
_RESERVE = {
    "main": 14 * GIB + 14 * GIB + 3 * GIB,
    "test": 4 * GIB, "testnet4": 3 * GIB, "signet": 2 * GIB, "regtest": 256 * MIB,
}
_MIN_PRUNE_MIB = 550  # bitcoind's minimum (MIN_DISK_SPACE_FOR_BLOCK_FILES)
_MAX_PRUNE_MIB = 200 * 1024  # beyond this, more blocks buy little


@dataclass(frozen=True)
class Resources:
    prune_mib: int
    dbcache_mib: int
    warning: str = ""  # set when the disk is too small for the chain's unprunable parts


def plan_resources(chain: str, disk_bytes: int, ram_bytes: int, ibd: bool) -> Resources:
    """``disk_bytes``: free space plus what bitcoind already uses on that filesystem."""
    reserve = _RESERVE.get(chain, _RESERVE["main"])
    spare = disk_bytes - reserve
    warning = ""
    if spare < _MIN_PRUNE_MIB * MIB:
        warning = (f"{disk_bytes / GIB:.0f} GiB is too little for the {chain} chain: "
                   f"about {(reserve + _MIN_PRUNE_MIB * MIB) / GIB:.0f} GiB are needed")
        prune = _MIN_PRUNE_MIB
    else:
        prune = min(_MAX_PRUNE_MIB, max(_MIN_PRUNE_MIB, int(spare * 0.8) // MIB))
    ram_mib = ram_bytes // MIB
    if ibd:
        dbcache = max(300, min(ram_mib // 4, 2048))
    else:
        dbcache = max(100, min(ram_mib // 16, 450))
    return Resources(prune, dbcache, warning)


def host_resources(bitcoin_dir: Path) -> tuple[int, int]:
    """(disk bytes bitcoind may use, total RAM bytes) on this machine."""
    probe = bitcoin_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    used = sum(f.stat().st_size for f in bitcoin_dir.rglob("*") if f.is_file()) \
        if bitcoin_dir.exists() else 0
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return free + used, ram

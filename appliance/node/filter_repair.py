"""Bring bitcoind back after a crash left its block filter index out of step.

Bitcoin Knots 29.4 (and Core 29) cannot start again after a reorg below its last flush
followed by a kill -9 (a power cut): the index's best-block locator, written at the last
flush, names a block on the old branch while the per-height entries already hold the new
one, and bitcoind stops with "Cannot read last block filter header; index may be
corrupted" at every start (reproduced by ``firmware-tests/functional/test_node_filter_repair.py``).

Moving the index aside would make bitcoind rebuild it from the genesis block, which a
pruned node no longer has: it refuses to start ("best block of the index goes beyond
pruned data") and only a full ``-reindex`` (the whole chain downloaded again, days on a
Pi) would do. Instead the locator is moved back :data:`REWIND` blocks, to a block whose
per-height entry is below any reorg the box has seen: the index's entries up to there are
right on both branches, and bitcoind rebuilds the rest from the recent blocks a pruned
node always keeps (at least 288). Moving the locator back is always safe: the index only
re-does work.

Run as bitcoind's user with bitcoind stopped (LevelDB's lock refuses a running one):
the supervision listener starts the ``bitcoind-repair`` program when bitcoind's log
shows :data:`DAMAGED` (``appliance/supervision/repair.py``)::

    python -m appliance.node.filter_repair --datadir /var/lib/bitcoind
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import plyvel

from ..config import NETWORKS, chain_dir

__all__ = ["DAMAGED", "REWIND", "index_db", "rewind_filter_index"]

#: What bitcoind logs when the index's locator and its entries disagree.
DAMAGED = "Cannot read last block filter header"
#: Blocks the locator moves back: deeper than any reorg, far inside the pruning window.
REWIND = 100

_BEST_BLOCK = b"B"  # the index's CBlockLocator: int32 version, compact size, hashes
_HEIGHT = b"t"  # "t" + big-endian height -> (block hash, filter hash, header, position)


def index_db(datadir: Path, chain: str) -> Path:
    """The index of ``chain``; ``"auto"``: the one index under ``datadir`` (a box runs one
    network, and the repair program need not read hearth.toml to know which)."""
    if chain != "auto":
        return chain_dir(datadir, chain) / "indexes" / "blockfilter" / "basic" / "db"
    found = [db for name, _ in NETWORKS.values() if (db := index_db(datadir, name)).is_dir()]
    if len(found) != 1:
        raise OSError(f"{len(found)} block filter indexes under {datadir}: say --chain")
    return found[0]


def rewind_filter_index(db_path: Path, blocks: int = REWIND) -> int:
    """Point the index's best block ``blocks`` below its highest entry; the new height.

    Raises OSError if the index is missing or in use (bitcoind running)."""
    if not (db_path / "CURRENT").exists():
        raise OSError(f"no block filter index at {db_path}")
    try:
        db = plyvel.DB(str(db_path), create_if_missing=False)
    except plyvel.Error as exc:  # IOError: the LOCK is held
        raise OSError(f"cannot open {db_path}: {exc}") from exc
    try:
        locator = db.get(_BEST_BLOCK)
        if locator is None or len(locator) < 4:
            raise OSError(f"{db_path} has no best-block locator")
        top = None
        for key in db.iterator(prefix=_HEIGHT, include_value=False, reverse=True):
            top = int.from_bytes(key[1:5], "big")
            break
        if top is None:
            raise OSError(f"{db_path} has no block entries")
        height = max(0, top - blocks)
        entry = db.get(_HEIGHT + height.to_bytes(4, "big"))
        if entry is None or len(entry) < 32:
            raise OSError(f"{db_path} has no entry at height {height}")
        # Same version field, one hash: the block at ``height`` on the per-height index.
        db.put(_BEST_BLOCK, locator[:4] + b"\x01" + entry[:32], sync=True)
    finally:
        db.close()
    return height


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m appliance.node.filter_repair",
                                description="rewind bitcoind's block filter index after a "
                                            "crash (bitcoind must be stopped)")
    p.add_argument("--datadir", type=Path, required=True, help="bitcoind's -datadir")
    p.add_argument("--chain", default="auto",
                   help="main, test, testnet4, signet, regtest; auto: the one index there")
    p.add_argument("--blocks", type=int, default=REWIND, help="how far back")
    args = p.parse_args(argv)
    try:
        height = rewind_filter_index(index_db(args.datadir, args.chain), args.blocks)
    except OSError as exc:
        print(f"filter index not repaired: {exc}", file=sys.stderr)
        return 1
    print(f"block filter index rewound to height {height}; bitcoind rebuilds it from there")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The tower as a listener of the chain follower (:mod:`appliance.node.follower`).

Every block is read in full (any transaction can be a breach; a BIP158 filter cannot
tell, the locator is a txid) and every mempool transaction is checked. The store keeps
the hashes of the last blocks it saw: that is how a block bitcoind no longer has is
undone (bitcoind restarted behind the tower, or a reorg), without asking bitcoind about
a block it may not know.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from ..chain import Tx, hash_to_hex_str, hex_str_to_hash
from ..node import BitcoinRPC
from ..node.follower import BlockRef, ConnectedBlock
from .store import TowerStore
from .watcher import Watcher

__all__ = ["KEEP_HASHES", "TowerListener"]

log = logging.getLogger("tower")

#: Recent block hashes kept for walking back; deeper reorgs than this are not something
#: a pruned node (288 blocks) could replay anyway.
KEEP_HASHES = 300
#: Hashes recorded below the tip on a fresh start, so a bitcoind that comes back a few
#: blocks behind can be followed down at once.
_FRESH_HASHES = 6


class TowerListener:
    """``report()`` after every change; ``error(text)`` for what the status must show
    (None clears it)."""

    def __init__(self, store: TowerStore, watcher: Watcher, rpc: BitcoinRPC,
                 report: Callable[[], None], error: Callable[[str | None], None]) -> None:
        self.store = store
        self.watcher = watcher
        self.rpc = rpc
        self.report = report
        self.error = error
        self._lost = False  # the shown error is about bitcoind: cleared once back in step

    def chain_tip(self) -> BlockRef | None:
        tip = self.store.tip()
        return BlockRef(*tip) if tip is not None else None

    async def start_fresh(self, node_height: int) -> None:
        first = max(0, node_height - _FRESH_HASHES + 1)
        hashes = await self.rpc.batch([("getblockhash", [h])
                                       for h in range(first, node_height + 1)])
        for height, hash_hex in zip(range(first, node_height + 1), hashes, strict=True):
            if isinstance(hash_hex, Exception):
                raise hash_hex  # bitcoind's chain shrank meanwhile: the resync retries
            self.store.set_tip(height, hex_str_to_hash(hash_hex), keep=KEEP_HASHES)
        self.watcher.height = node_height
        log.info("new tower store: watching from height %d", node_height)

    def needs_blocks(self) -> bool:
        return True

    async def wants_pruned(self, block_hash: bytes) -> bool:
        return False  # a breach can be anywhere in it: no filter tells; logged instead

    async def block_connected(self, block: ConnectedBlock) -> None:
        if block.block is None:
            # Pruned before we saw it (the box was off for weeks): nothing can check it.
            log.error("block %d is not available (pruned): breaches in it cannot be seen",
                      block.height)
            self.error(f"block {block.height} pruned before the tower saw it")
            self.watcher.height = block.height
        else:
            await self.watcher.on_block(block.block, block.height)
        self.store.set_tip(block.height, block.header.hash, keep=KEEP_HASHES)
        self.report()

    async def block_disconnected(self, tip: BlockRef) -> bool:
        parent = self.store.block_hash(tip.height - 1) if tip.height > 0 else None
        if parent is None:
            return False  # below the hashes we keep: wait for bitcoind to come back
        log.warning("block %d %s was reorged out", tip.height, hash_to_hex_str(tip.hash))
        await self.watcher.on_disconnect(tip.height)
        self.store.drop_tip(tip.height, parent)
        return True

    async def tx_added(self, tx: Tx) -> None:
        await self.watcher.on_transaction(tx)

    async def tx_removed(self, txid: bytes) -> None:
        pass  # a breach that left the mempool is still answered if it comes back

    async def mempool_resync(self, txs: AsyncIterator[Tx]) -> None:
        async for tx in txs:
            await self.watcher.on_transaction(tx)

    async def caught_up(self) -> None:
        if self._lost:
            self._lost = False
            self.error(None)
        self.report()

    def lost(self, error: str) -> None:
        self._lost = True
        self.error(f"bitcoind: {error}")

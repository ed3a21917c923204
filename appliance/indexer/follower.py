"""The index as a listener of the chain follower (:mod:`appliance.node.follower`).

Blocks go into the index (full blocks while something is watched, else headers; a
pruned block only when its BIP158 filter matches a live script); a block leaving
bitcoind's chain is undone with its undo record. The mempool slice keeps the
transactions touching watched scripts. Notifications to Electrum clients are gathered
while the follower works and sent once it is in step (one per catch-up, not per block).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from decimal import Decimal
from typing import Any

from ..chain import ChainParseError, Tx, hash_to_hex_str, parse_header
from ..durability import WriteFailed, is_disk_full
from ..node import BitcoinRPC, RPCError, ZMQSubscriber
from ..node.follower import (
    BlockRef,
    ChainFollower,
    ConnectedBlock,
    FollowerStats,
    ListenerPaused,
)
from .bip158 import GCSFilter
from .index import Indexer
from .mempool import Mempool, MempoolTx
from .schema import UNDO_DEPTH
from .store import StoreError

__all__ = ["RECENT_RAW_TXS", "IndexListener", "ScripthashListener", "TipListener"]

log = logging.getLogger("indexer.follow")

ScripthashListener = Callable[[set[bytes]], Awaitable[None]]
TipListener = Callable[[int, bytes], Awaitable[None]]

RPC_INVALID_ADDRESS_OR_KEY = -5  # getmempoolentry: not in the mempool
#: The last mempool transactions, raw, whether ours or not: a script subscribed to just
#: now (ad-hoc watch) is matched against them (~0.4 MB; minutes of mainnet traffic).
RECENT_RAW_TXS = 1_000
_HEADER_BATCH = 2_000
_MEMPOOL_RETRY_CAP_S = 10.0


def _entries(pool: Mempool, scripthash: bytes) -> set[tuple[bytes, int]]:
    return {(e.txid, e.height) for e in pool.entries(scripthash)}


class IndexListener:
    """Keeps the index in step with bitcoind through one :class:`ChainFollower`."""

    def __init__(self, indexer: Indexer, rpc: BitcoinRPC, subscriber: ZMQSubscriber,
                 on_scripthashes: ScripthashListener, on_tip: TipListener, *,
                 poll_s: float = 5.0) -> None:
        self.indexer = indexer
        self.rpc = rpc
        self.on_scripthashes = on_scripthashes
        self.on_tip = on_tip
        self.chain = ChainFollower(rpc, subscriber, self, poll_s=poll_s)
        self.recent_raw: deque[bytes] = deque(maxlen=RECENT_RAW_TXS)
        self._touched: set[bytes] = set()
        self._tip_moved = False
        # A resync (the follower's, or the backfiller's when a wallet goes live) builds a
        # new slice beside the live one; adds and removes meanwhile go to the live one at
        # once (no waiting behind the resync) and are replayed on the new one at the swap.
        self._resync_lock = asyncio.Lock()
        self._meanwhile: dict[bytes, bool] | None = None  # txid -> added (else removed)
        #: why the index is paused (a write failed: a full disk), until back in step
        self.paused: str | None = None
        self.disk_full = False
        #: set once in step, or paused before that: clients are served what is on disk
        self.serving = asyncio.Event()

    # --- what the rest of the indexer uses ----------------------------------------------
    @property
    def stats(self) -> FollowerStats:
        return self.chain.stats

    @property
    def synced(self) -> asyncio.Event:
        return self.chain.synced

    @property
    def chain_lock(self) -> asyncio.Lock:
        return self.chain.chain_lock

    async def run(self) -> None:
        await self.chain.run()

    async def fetch_from_peer(self, hash_hex: str) -> bytes:
        return await self.chain.fetch_from_peer(hash_hex)

    async def sync_mempool(self) -> None:
        """The whole mempool again (a wallet went live). Its matches must not be lost
        to a full disk: retried with a back-off until written (the slice stays as it
        was meanwhile)."""
        delay = 0.5
        while True:
            try:
                await self.chain.sync_mempool()
                if self.chain.in_step:  # (the follower itself clears its own pause)
                    self._resumed()
                return
            except ListenerPaused:
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MEMPOOL_RETRY_CAP_S)

    def _resumed(self) -> None:
        if self.paused is not None:
            log.info("index resumed: writes go through again")
            self.paused, self.disk_full = None, False

    @contextlib.contextmanager
    def _pausing(self) -> Iterator[None]:
        """A failed write (memory already put back to what the disk holds) pauses the
        follower: it backs off and resyncs from the index's tip, so no block is skipped
        or applied twice, and the mempool is matched again then."""
        try:
            yield
        except WriteFailed as exc:
            if self.paused is None:
                log.warning("index paused, serving what is on disk: %s; retrying until "
                            "it can write", exc.text)
            self.paused = exc.text
            self.disk_full = is_disk_full(exc)
            self.serving.set()
            raise ListenerPaused(exc.text) from None

    # --- ChainListener: blocks ----------------------------------------------------------
    def chain_tip(self) -> BlockRef | None:
        tip = self.indexer.tip()
        return BlockRef(*tip) if tip is not None else None

    async def start_fresh(self, node_height: int) -> None:
        """First start: every header up to ``node_height - UNDO_DEPTH`` (deep enough
        never to reorg); blocks are read from there on."""
        last = node_height - UNDO_DEPTH
        if last < 0:
            return
        log.info("loading %d block headers from bitcoind", last + 1)
        prev_hash: bytes | None = None
        for start in range(0, last + 1, _HEADER_BATCH):
            end = min(last, start + _HEADER_BATCH - 1)
            hashes = await self.rpc.batch([("getblockhash", [h]) for h in range(start, end + 1)])
            headers = await self.rpc.batch([("getblockheader", [h, False]) for h in hashes])
            raws = [bytes.fromhex(h) for h in headers]
            for raw in raws:
                header = parse_header(raw)
                if prev_hash is not None and header.prev_hash != prev_hash:
                    raise ChainParseError("headers from bitcoind do not chain")
                prev_hash = header.hash
            assert prev_hash is not None
            with self._pausing():
                self.indexer.store.put_headers(start, raws, prev_hash)

    def needs_blocks(self) -> bool:
        return self.indexer.watches_anything()

    async def wants_pruned(self, block_hash: bytes) -> bool:
        # Ad-hoc watches are known by hash only, so a filter cannot match them.
        filt = await self.rpc.call("getblockfilter", hash_to_hex_str(block_hash), "basic")
        return GCSFilter.from_hex(block_hash, filt["filter"]).match_any(
            self.indexer.live_scripts())

    async def block_connected(self, block: ConnectedBlock) -> None:
        with self._pausing():
            if block.block is None:
                self.indexer.connect_header_only(block.height, block.header.raw,
                                                 block.header.hash)
            else:
                self._touched |= await self.indexer.connect_block(block.block, block.height)
        self._tip_moved = True

    async def block_disconnected(self, tip: BlockRef) -> bool:
        try:
            with self._pausing():
                self._touched |= self.indexer.rollback_tip()
        except StoreError as exc:
            log.error("cannot undo block %d: %s", tip.height, exc)
            return False
        self._tip_moved = True
        return True

    async def caught_up(self) -> None:
        self._resumed()
        self.serving.set()
        touched, self._touched = self._touched, set()
        touched |= await self._refresh_mempool_parents()
        if touched:
            await self.on_scripthashes(touched)
        if self._tip_moved:
            self._tip_moved = False
            tip = self.indexer.tip()
            header = self.indexer.store.header(tip[0]) if tip is not None else None
            if tip is not None and header is not None:
                await self.on_tip(tip[0], header)

    def lost(self, error: str) -> None:
        pass  # the status report reads ``stats.last_error`` and ``chain.in_step``

    # --- ChainListener: mempool ---------------------------------------------------------
    async def tx_added(self, tx: Tx) -> None:
        self.recent_raw.append(tx.raw)
        if self.prematch(tx):
            with self._pausing():  # its match is taken again at the resync
                await self.add_mempool_tx(tx)
            if self._meanwhile is not None:
                self._meanwhile[tx.txid] = True

    async def tx_removed(self, txid: bytes) -> None:
        if self._meanwhile is not None:
            self._meanwhile[txid] = False
        touched = self.indexer.mempool.remove(txid)
        if touched:
            await self.on_scripthashes(touched)

    async def mempool_resync(self, txs: AsyncIterator[Tx]) -> None:
        """Build the slice again from bitcoind's mempool beside the old one, then swap:
        clients never see it empty meanwhile."""
        idx = self.indexer
        async with self._resync_lock:
            self._meanwhile = {}
            try:
                pool = Mempool()
                if idx.watches_anything():
                    children: dict[bytes, list[Tx]] = {}  # unmatched txs by the parents they spend
                    async for tx in txs:
                        if self.prematch(tx, pool):
                            with self._pausing():  # the old slice stays; tried again
                                await self.add_mempool_tx(tx, notify=False, pool=pool)
                        else:
                            for i in tx.inputs:
                                children.setdefault(i.prev_hash, []).append(tx)
                    # A child seen before its parent matched: match it now, parents first.
                    queue = list(pool.txs)
                    while queue:
                        for child in children.pop(queue.pop(), []):
                            if self.prematch(child, pool):
                                with self._pausing():
                                    await self.add_mempool_tx(child, notify=False,
                                                              pool=pool)
                                queue.append(child.txid)
                # From here to the swap, no await: replay what came and went meanwhile.
                for txid, added in self._meanwhile.items():
                    entry = idx.mempool.txs.get(txid)
                    if added and entry is not None:
                        pool.add(entry)
                    elif not added:
                        pool.remove(txid)
                # A block may have confirmed some while we read: they are not mempool.
                for txid in [t for t in pool.txs if idx.store.confirmation(t) is not None]:
                    pool.remove(txid)
                old, idx.mempool = idx.mempool, pool
            finally:
                self._meanwhile = None
        touched = {sh for sh in set(old.by_scripthash) | set(pool.by_scripthash)
                   if _entries(old, sh) != _entries(pool, sh)}
        if touched:
            await self.on_scripthashes(touched)

    def prematch(self, tx: Tx, pool: Mempool | None = None) -> bool:
        idx = self.indexer
        pool = idx.mempool if pool is None else pool
        if any(idx.watched_script(o.script_pubkey) for o in tx.outputs):
            return True
        for i in tx.inputs:
            op = i.prev_hash + i.prev_idx.to_bytes(4, "big")
            if op in idx.unspent or pool.lookup_created(op) is not None:
                return True
        return False

    async def add_mempool_tx(self, tx: Tx, entry: dict[str, Any] | None = None,
                             notify: bool = True, pool: Mempool | None = None) -> set[bytes]:
        idx = self.indexer
        mempool = idx.mempool if pool is None else pool
        if tx.txid in mempool or idx.store.confirmation(tx.txid) is not None:
            return set()

        def lookup(op: bytes) -> tuple[bytes, int] | None:
            return idx.unspent.get(op) or mempool.lookup_created(op)

        matches, derived = await idx.match_with_gap([tx], idx.watched_script,
                                                    lookup, None)
        if derived:
            # The gap moved: on disk before the match counts (a failure restores memory
            # and raises; the caller takes the transaction again later).
            batch = idx.store.begin_plain()
            idx.write_wallets(batch, set(derived), derived)
            await idx.commit_backfill(batch)
        if not matches:
            return set()
        if entry is None:
            try:
                entry = await self.rpc.call("getmempoolentry", hash_to_hex_str(tx.txid))
            except RPCError as exc:
                if exc.code == RPC_INVALID_ADDRESS_OR_KEY:  # already mined or gone
                    return set()
                raise
        assert entry is not None
        if tx.txid in mempool or idx.store.confirmation(tx.txid) is not None:
            return set()  # confirmed while we asked
        fee = int(Decimal(entry["fees"]["base"]) * 100_000_000)
        touched = mempool.add(MempoolTx(tx, matches[0], fee, bool(entry.get("depends"))))
        if notify and touched:
            await self.on_scripthashes(touched)
        return touched

    async def _refresh_mempool_parents(self) -> set[bytes]:
        """A block may have confirmed the parents of our -1 entries: they become 0."""
        touched: set[bytes] = set()
        for entry in list(self.indexer.mempool.txs.values()):
            if not entry.unconfirmed_parents:
                continue
            try:
                info = await self.rpc.call("getmempoolentry", hash_to_hex_str(entry.txid))
            except RPCError:
                continue
            if not info.get("depends"):
                entry.unconfirmed_parents = False
                touched |= entry.match.scripthashes
        return touched

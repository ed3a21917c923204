"""Follow bitcoind: catch up over RPC, then let ZMQ drive blocks and the mempool.

Order at start (ZMQ is a hint, RPC the truth): subscribe first, sync blocks over RPC,
load the wallets' mempool slice, then consume notifications. ``rawblock`` connects the
next block (its parent must be our tip, else we resync: reorg or missed blocks);
``sequence`` A/R add and remove mempool transactions, ``rawtx`` supplies their bytes
without an RPC round trip. A sequence gap or a bitcoind restart means resync.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ..chain import ChainParseError, Tx, hash_to_hex_str, parse_header, parse_tx
from ..node import (
    BitcoinRPC,
    NodeError,
    Notification,
    RPCError,
    SequenceLabel,
    ZMQSubscriber,
    parse_sequence,
)
from .bip158 import GCSFilter
from .index import Indexer
from .mempool import MempoolTx
from .pace import Pacer, parse_block_aside
from .schema import UNDO_DEPTH

__all__ = ["ChainFollower", "FollowerStats"]

log = logging.getLogger("indexer.follow")

ScripthashListener = Callable[[set[bytes]], Awaitable[None]]
TipListener = Callable[[int, bytes], Awaitable[None]]

# bitcoind: "Block not available (pruned data)" and "Block not found on disk".
RPC_MISC_ERROR = -1
RPC_INVALID_ADDRESS_OR_KEY = -5
_SEEN_TXIDS = 50_000  # rawtx bodies remembered until their sequence "A" arrives
#: The last mempool transactions, raw, whether ours or not: a script subscribed to just
#: now (ad-hoc watch) is matched against them (~0.4 MB; minutes of mainnet traffic).
RECENT_RAW_TXS = 1_000
_HEADER_BATCH = 2_000


@dataclass
class FollowerStats:
    blocks: int = 0
    reorgs: int = 0
    rolled_back: int = 0
    resyncs: int = 0
    mempool_txs: int = 0
    fetched_from_peer: int = 0
    last_block_ms: float = 0.0
    last_error: str = ""
    started: float = field(default_factory=time.monotonic)


def _hash_rev(hash_hex: str) -> bytes:
    return bytes.fromhex(hash_hex)[::-1]


class ChainFollower:
    def __init__(self, indexer: Indexer, rpc: BitcoinRPC, subscriber: ZMQSubscriber,
                 on_scripthashes: ScripthashListener, on_tip: TipListener) -> None:
        self.indexer = indexer
        self.rpc = rpc
        self.sub = subscriber
        self.on_scripthashes = on_scripthashes
        self.on_tip = on_tip
        self.stats = FollowerStats()
        self.synced = asyncio.Event()
        self._seen: OrderedDict[bytes, Tx | None] = OrderedDict()
        self._awaiting: set[bytes] = set()  # "A" arrived before the tx's rawtx
        self.recent_raw: deque[bytes] = deque(maxlen=RECENT_RAW_TXS)
        self.chain_lock = asyncio.Lock()  # one writer of the chain at a time

    # --- main loop ---------------------------------------------------------------------
    async def run(self) -> None:
        await self._resync_until_ok()
        self.synced.set()
        pacer = Pacer()
        async for note in self.sub:
            # Queued ZMQ messages are read without a pause: a burst of 5,000 would
            # otherwise hold the event loop (and every client) until it is drained.
            await pacer.tick()
            try:
                await self.handle(note)
            except (NodeError, ChainParseError) as exc:
                # Not fatal: the next resync re-reads the truth.
                self.stats.last_error = str(exc)
                log.warning("while handling %s: %s; resyncing", note.topic, exc)
                await self._resync_until_ok()

    async def _resync_until_ok(self) -> None:
        """Resync, backing off while bitcoind cannot answer (restarting, or its filter
        index still catching up during initial block download)."""
        delay = 0.5
        while True:
            try:
                await self.resync()
                self.stats.last_error = ""
                return
            except (NodeError, ChainParseError) as exc:
                self.stats.last_error = str(exc)
                log.warning("resync failed: %s; retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def handle(self, note: Notification) -> None:
        if note.gap or note.resync:
            log.info("zmq %s: %s; resyncing", note.topic,
                     f"{note.gap} messages missed" if note.gap else "publisher restarted")
            await self.resync()
            return
        if note.topic == "rawblock":
            await self.on_rawblock(note.body)
        elif note.topic == "rawtx":
            await self.on_rawtx(note.body)
        elif note.topic == "sequence":
            await self.on_sequence(note.body)

    async def resync(self) -> None:
        """Bring blocks and the mempool slice in line with bitcoind."""
        self.stats.resyncs += 1
        await self.sync_blocks()
        await self.sync_mempool()

    # --- blocks -------------------------------------------------------------------------
    async def sync_blocks(self) -> None:
        """Roll back what bitcoind no longer has, then connect up to its tip."""
        touched: set[bytes] = set()
        async with self.chain_lock:
            while not await self._sync_blocks_once(touched):
                log.info("bitcoind's chain changed during catch-up; again")
        if touched:
            await self.on_scripthashes(touched)
        tip = self.indexer.tip()
        if tip is not None:
            header = self.indexer.store.header(tip[0])
            if header is not None:
                await self.on_tip(tip[0], header)

    async def _sync_blocks_once(self, touched: set[bytes]) -> bool:
        node_height = int(await self.rpc.call("getblockcount"))
        if self.indexer.tip() is None and node_height >= UNDO_DEPTH:
            await self._bulk_headers(node_height - UNDO_DEPTH)
        # Walk back from our tip until bitcoind agrees (a reorg while we were away).
        rolled = 0
        while (tip := self.indexer.tip()) is not None:
            height, block_hash = tip
            if height <= node_height:
                node_hash = await self.rpc.call("getblockhash", height)
                if _hash_rev(node_hash) == block_hash:
                    break
            touched |= self.indexer.rollback_tip()
            rolled += 1
        if rolled:
            self.stats.reorgs += 1
            self.stats.rolled_back += rolled
            log.info("reorg: rolled back %d blocks", rolled)
        height = tip[0] + 1 if tip else 0
        while height <= node_height:
            end = min(node_height, height + _HEADER_BATCH - 1)
            hashes = await self.rpc.batch([("getblockhash", [h]) for h in range(height, end + 1)])
            for h, block_hash in zip(range(height, end + 1), hashes, strict=True):
                if isinstance(block_hash, Exception):  # the node reorged under us
                    return False
                if not await self._connect(h, block_hash, touched):
                    return False
            height = end + 1
            node_height = max(node_height, int(await self.rpc.call("getblockcount")))
        return True

    async def _bulk_headers(self, last: int) -> None:
        """First start: every header up to ``last`` (deep enough never to reorg)."""
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
            self.indexer.store.put_headers(start, raws, prev_hash)

    async def _connect(self, height: int, hash_hex: str, touched: set[bytes]) -> bool:
        """Connect block ``height``; False if it does not extend our tip."""
        tip = self.indexer.tip()
        expected_prev = tip[1] if tip else bytes(32)
        live = self.indexer.live_scripts()
        # Nothing watched, or pruned and its filter shows nothing of ours: header only.
        # (Ad-hoc watches are known by hash only, so a filter cannot match them.)
        raw = await self.fetch_block(hash_hex, live) if self.indexer.watches_anything() else None
        if raw is None:
            raw_header = bytes.fromhex(await self.rpc.call("getblockheader", hash_hex, False))
            header = parse_header(raw_header)
            if header.prev_hash != expected_prev and height > 0:
                return False
            self.indexer.connect_header_only(height, raw_header, header.hash)
            return True
        started = time.perf_counter()
        block = await parse_block_aside(raw)
        if block.header.prev_hash != expected_prev and height > 0:
            return False
        touched |= await self.indexer.connect_block(block, height)
        self.stats.blocks += 1
        self.stats.last_block_ms = (time.perf_counter() - started) * 1000
        return True

    async def fetch_block(self, hash_hex: str, scripts: set[bytes]) -> bytes | None:
        """The raw block; if pruned, only when its BIP158 filter matches ``scripts``
        (then from a peer via getblockfrompeer). None: pruned and provably irrelevant."""
        try:
            return bytes.fromhex(await self.rpc.call("getblock", hash_hex, 0))
        except RPCError as exc:
            if exc.code != RPC_MISC_ERROR:
                raise
        filt = await self.rpc.call("getblockfilter", hash_hex, "basic")
        if not GCSFilter.from_hex(_hash_rev(hash_hex), filt["filter"]).match_any(scripts):
            return None
        return await self.fetch_from_peer(hash_hex)

    async def fetch_from_peer(self, hash_hex: str, wait: float = 30.0) -> bytes:
        """Ask bitcoind to fetch a pruned block from a peer that serves full blocks."""
        peers = await self.rpc.call("getpeerinfo")
        # NODE_NETWORK (bit 0) peers serve any block; pruned (NODE_NETWORK_LIMITED) don't.
        full = [p for p in peers if int(p.get("services", "0"), 16) & 1]
        last: Exception | None = None
        for peer in full or peers:
            try:
                await self.rpc.call("getblockfrompeer", hash_hex, peer["id"])
            except RPCError as exc:
                if "already" not in exc.message:  # "Block already downloaded" is fine
                    last = exc
                    continue
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                try:
                    raw = bytes.fromhex(await self.rpc.call("getblock", hash_hex, 0))
                    self.stats.fetched_from_peer += 1
                    return raw
                except RPCError as exc:
                    last = exc
                    await asyncio.sleep(0.1)
        raise RPCError(RPC_MISC_ERROR, f"block {hash_hex} is pruned and no peer served it "
                       f"({last})", "getblockfrompeer")

    async def on_rawblock(self, raw: bytes) -> None:
        header = parse_header(raw[:80])
        tip = self.indexer.tip()
        if tip is not None and header.hash == tip[1]:
            return  # already connected during catch-up
        if tip is None or header.prev_hash != tip[1]:
            await self.sync_blocks()  # a reorg, or we missed blocks
            await self.sync_mempool()
            return
        async with self.chain_lock:
            started = time.perf_counter()
            block = await parse_block_aside(raw)
            if self.indexer.tip() != tip:  # changed while we waited for the lock
                return
            touched = await self.indexer.connect_block(block, tip[0] + 1)
            self.stats.blocks += 1
            self.stats.last_block_ms = (time.perf_counter() - started) * 1000
        touched |= await self._refresh_mempool_parents()
        if touched:
            await self.on_scripthashes(touched)
        await self.on_tip(tip[0] + 1, block.header.raw)

    # --- mempool ------------------------------------------------------------------------
    def _remember(self, txid: bytes, tx: Tx | None) -> None:
        self._seen[txid] = tx
        self._seen.move_to_end(txid)
        while len(self._seen) > _SEEN_TXIDS:
            self._seen.popitem(last=False)

    def prematch(self, tx: Tx) -> bool:
        idx = self.indexer
        if any(idx.watched_script(o.script_pubkey) for o in tx.outputs):
            return True
        for i in tx.inputs:
            op = i.prev_hash + i.prev_idx.to_bytes(4, "big")
            if op in idx.unspent or idx.mempool.lookup_created(op) is not None:
                return True
        return False

    async def on_rawtx(self, raw: bytes) -> None:
        tx = parse_tx(raw)
        self.recent_raw.append(raw)
        relevant = self.prematch(tx)
        self._remember(tx.txid, tx if relevant else None)
        if tx.txid in self._awaiting:
            self._awaiting.discard(tx.txid)
            if relevant:
                await self.add_mempool_tx(tx)

    async def on_sequence(self, body: bytes) -> None:
        event = parse_sequence(body)
        txid = _hash_rev(event.hash_hex)
        if event.label == SequenceLabel.TX_ADDED:
            if txid in self._seen:
                tx = self._seen[txid]
                if tx is not None:
                    await self.add_mempool_tx(tx)
            else:
                self._awaiting.add(txid)
        elif event.label == SequenceLabel.TX_REMOVED:
            self._awaiting.discard(txid)
            touched = self.indexer.mempool.remove(txid)
            if touched:
                self.stats.mempool_txs = len(self.indexer.mempool.txs)
                await self.on_scripthashes(touched)

    async def add_mempool_tx(self, tx: Tx, entry: dict[str, Any] | None = None,
                              notify: bool = True) -> set[bytes]:
        idx = self.indexer
        if tx.txid in idx.mempool or idx.store.confirmation(tx.txid) is not None:
            return set()

        def lookup(op: bytes) -> tuple[bytes, int] | None:
            return idx.unspent.get(op) or idx.mempool.lookup_created(op)

        matches, derived = await idx.match_with_gap([tx], idx.watched_script,
                                                    lookup, None)
        if derived:
            batch = idx.store.begin_plain()
            idx.write_wallets(batch, set(derived), derived)
            idx.store.commit_backfill(batch)
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
        if tx.txid in idx.mempool or idx.store.confirmation(tx.txid) is not None:
            return set()  # confirmed while we asked
        fee = int(Decimal(entry["fees"]["base"]) * 100_000_000)
        touched = idx.mempool.add(MempoolTx(tx, matches[0], fee, bool(entry.get("depends"))))
        self.stats.mempool_txs = len(idx.mempool.txs)
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

    async def sync_mempool(self) -> None:
        """Bring the wallets' mempool slice in line with ``getrawmempool`` (start, resync,
        a wallet gone live). Topped up and pruned, never emptied first: a client asking
        meanwhile must not see its unconfirmed transactions vanish."""
        idx = self.indexer
        touched: set[bytes] = set()
        if idx.watches_anything():
            before = set(idx.mempool.txs)  # not those ZMQ adds while we ask
            txids: list[str] = await self.rpc.call("getrawmempool")
            present = {_hash_rev(t) for t in txids}
            for txid in before - present:
                touched |= idx.mempool.remove(txid)
            txids = [t for t in txids if _hash_rev(t) not in idx.mempool]
            children: dict[bytes, list[Tx]] = {}  # unmatched txs by the parents they spend
            for start in range(0, len(txids), 500):
                chunk = txids[start:start + 500]
                raws = await self.rpc.batch([("getrawtransaction", [t]) for t in chunk])
                for raw in raws:
                    if isinstance(raw, Exception):
                        continue  # left the mempool meanwhile
                    tx = parse_tx(bytes.fromhex(raw))
                    if self.prematch(tx):
                        touched |= await self.add_mempool_tx(tx, notify=False)
                    else:
                        for i in tx.inputs:
                            children.setdefault(i.prev_hash, []).append(tx)
            # A child seen before its parent matched: match it now, parents first.
            queue = [t for t in list(idx.mempool.txs)]
            while queue:
                parent = queue.pop()
                for child in children.pop(parent, []):
                    if self.prematch(child):
                        touched |= await self.add_mempool_tx(child, notify=False)
                        queue.append(child.txid)
        self.stats.mempool_txs = len(idx.mempool.txs)
        if touched:
            await self.on_scripthashes(touched)

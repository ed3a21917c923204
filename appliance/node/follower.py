"""One chain follower for every consumer of bitcoind's chain (the indexer, the tower).

The follower keeps one :class:`ChainListener` in step with bitcoind. ZMQ is a hint,
RPC the truth: subscribe first, bring the listener in step over RPC (walk back what
bitcoind no longer has, connect up to its tip, read its mempool), then follow:

* ``rawblock``: connected at once if its parent is the listener's tip; otherwise a
  reorg or missed blocks, and the blocks are synced over RPC;
* ``sequence`` ``D`` of the listener's tip: a block left bitcoind's chain
  (``invalidateblock``, ``preciousblock``, a reorg whose new blocks are not in yet):
  walk back now, not at the next block. ``C`` needs nothing (``rawblock`` carries the
  block; a lost one shows as a gap). ``A``/``R``: mempool add/remove in bitcoind's
  order, with the bodies ``rawtx`` brought (the two topics are separate sockets, so
  either may come first);
* a gap, a reconnect or a bitcoind restart: resync blocks and mempool;
* nothing for ``poll_s``: ask bitcoind for its tip (one small RPC). If it moved without a
  notification, resync; if bitcoind does not answer, the listener is told it is out of
  step (not ready) until a resync succeeds.

Bitcoind behind the listener (restarted from an older tip after a power cut) or on
another branch: blocks it does not have are disconnected one by one from the top, by
height and the listener's own records, never looked up in bitcoind (it does not know
them). A listener that cannot undo that deep keeps its tip, stays out of step and
waits for bitcoind's chain to come back to it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from ..chain import (
    Block,
    BlockHeader,
    ChainParseError,
    Tx,
    hex_str_to_hash,
    parse_header,
    parse_tx,
)
from .pace import Pacer, parse_block_aside
from .rpc import BitcoinRPC, NodeError, RPCError
from .zmq_sub import Notification, SequenceLabel, ZMQSubscriber, parse_sequence

__all__ = ["FOLLOWER_TOPICS", "BlockRef", "ChainBehind", "ChainFollower", "ChainListener",
           "ConnectedBlock", "FollowerStats", "ListenerPaused"]

log = logging.getLogger("chain.follow")

#: The ZMQ topics the follower needs (subscribe to these before it runs).
FOLLOWER_TOPICS = ("rawblock", "rawtx", "sequence")

# bitcoind: "Block not available (pruned data)".
RPC_MISC_ERROR = -1
_HEADER_BATCH = 2_000
_MEMPOOL_BATCH = 500
# rawtx bodies kept until their sequence "A" comes (normally milliseconds later). Block
# transactions get a rawtx and no "A", so this is a ring, bounded by bytes.
_BODY_BYTES = 4_000_000
_AWAITING = 50_000  # "A" seen before its rawtx
_RETRY_CAP_S = 10.0
_TX_ADDED = ord(SequenceLabel.TX_ADDED.value)


@dataclass(frozen=True, slots=True)
class BlockRef:
    """A block by height and hash (internal byte order, as in headers)."""

    height: int
    hash: bytes


@dataclass(frozen=True, slots=True)
class ConnectedBlock:
    """A block joining the best chain on top of the listener's tip.

    ``block`` is None when only the header was read: the listener needs no blocks, or the
    block is pruned and the listener did not want it fetched (``pruned`` then).
    """

    height: int
    header: BlockHeader
    block: Block | None
    pruned: bool = False

    @property
    def ref(self) -> BlockRef:
        return BlockRef(self.height, self.header.hash)


class ChainListener(Protocol):
    """What a consumer of the chain implements. Calls come one at a time, in order."""

    def chain_tip(self) -> BlockRef | None:
        """The last block the listener holds (None: a fresh start)."""

    async def start_fresh(self, node_height: int) -> None:
        """No tip yet: record where following starts (may leave the tip None = genesis)."""

    def needs_blocks(self) -> bool:
        """False: headers are enough for now (nothing is watched)."""

    async def wants_pruned(self, block_hash: bytes) -> bool:
        """A needed block is pruned: whether to fetch it from a peer (else header only)."""

    async def block_connected(self, block: ConnectedBlock) -> None:
        """``block`` extends the tip; afterwards :meth:`chain_tip` is ``block.ref``."""

    async def block_disconnected(self, tip: BlockRef) -> bool:
        """Undo the tip block (it left bitcoind's chain); False if it cannot be undone
        (deeper than the listener's records): the follower then waits for bitcoind."""

    async def tx_added(self, tx: Tx) -> None:
        """bitcoind accepted ``tx`` into its mempool."""

    async def tx_removed(self, txid: bytes) -> None:
        """``txid`` left the mempool without a block (replaced, evicted, expired)."""

    async def mempool_resync(self, txs: AsyncIterator[Tx]) -> None:
        """The whole mempool (read lazily: not iterating it costs no RPC)."""

    async def caught_up(self) -> None:
        """In step with bitcoind after a change (resync, block, disconnect): flush
        notifications; report ready."""

    def lost(self, error: str) -> None:
        """Out of step (bitcoind unreachable, or behind beyond what can be undone):
        report not ready until the next :meth:`caught_up`."""


class ChainBehind(NodeError):
    """bitcoind's chain leaves ours deeper than the listener can undo."""


class ListenerPaused(Exception):
    """The listener cannot take this now (its store refused a write: a full disk). It
    kept its state as it was; the follower backs off and resyncs from the listener's tip,
    as when bitcoind is away."""


#: What the follower survives by resyncing later (anything else is a bug: it propagates).
_RETRIED = (NodeError, ChainParseError, ListenerPaused)


@dataclass
class FollowerStats:
    blocks: int = 0  # connected with their transactions
    headers_only: int = 0
    reorgs: int = 0
    rolled_back: int = 0
    resyncs: int = 0
    polls: int = 0
    fetched_from_peer: int = 0
    last_block_ms: float = 0.0
    last_error: str = ""
    started: float = field(default_factory=time.monotonic)


class ChainFollower:
    """Feeds one :class:`ChainListener` from bitcoind; ``await run()`` until closed."""

    def __init__(self, rpc: BitcoinRPC, sub: ZMQSubscriber, listener: ChainListener, *,
                 poll_s: float = 5.0) -> None:
        self.rpc = rpc
        self.sub = sub
        self.listener = listener
        self.poll_s = poll_s
        self.stats = FollowerStats()
        self.synced = asyncio.Event()  # in step once since start
        self.in_step = False
        self.chain_lock = asyncio.Lock()  # one writer of the listener's chain at a time
        self._bodies: OrderedDict[bytes, Tx] = OrderedDict()
        self._body_bytes = 0
        self._awaiting: OrderedDict[bytes, None] = OrderedDict()

    # --- main loop ---------------------------------------------------------------------
    async def run(self) -> None:
        await self._resync_until_ok()
        self.synced.set()
        pacer = Pacer()
        while True:
            # Queued ZMQ messages are read without a pause: a burst of 5,000 would
            # otherwise hold the event loop (and every client) until it is drained.
            await pacer.tick()
            note = await self.sub.next(self.poll_s)
            if note is None and self.sub.closed:
                return
            try:
                if note is None:
                    await self._poll()
                else:
                    await self._handle(note)
            except _RETRIED as exc:
                # Not fatal: the resync re-reads the truth (and waits for bitcoind).
                self._lost(f"{exc}")
                log.warning("while handling %s: %s; resyncing",
                            note.topic if note else "a poll", exc)
                await self._resync_until_ok()

    def _lost(self, error: str) -> None:
        self.stats.last_error = error
        self.in_step = False
        self.listener.lost(error)

    async def _resync_until_ok(self) -> None:
        """Resync, backing off while bitcoind cannot answer (restarting, its filter index
        catching up, or behind deeper than the listener can undo)."""
        delay = 0.5
        said = ""
        while True:
            try:
                await self._resync()
                return
            except _RETRIED as exc:
                self._lost(str(exc))
                # Once per cause, not every 10 s for as long as it lasts.
                log.log(logging.WARNING if str(exc) != said else logging.DEBUG,
                        "resync failed: %s; retrying in %.1f s", exc, delay)
                said = str(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_CAP_S)

    async def _handle(self, note: Notification) -> None:
        if note.gap or note.resync:
            log.info("zmq %s: %s; resyncing", note.topic,
                     f"{note.gap} messages missed" if note.gap else "publisher restarted")
            await self._resync()
        elif note.topic == "rawblock":
            await self._on_rawblock(note.body)
        elif note.topic == "rawtx":
            await self._on_rawtx(note.body)
        elif note.topic == "sequence":
            await self._on_sequence(note.body)

    async def _resync(self) -> None:
        """Bring the listener's blocks and mempool in line with bitcoind."""
        self.stats.resyncs += 1
        await self._sync_blocks()
        await self.sync_mempool()
        await self._caught_up()

    async def _caught_up(self) -> None:
        self.in_step = True
        self.stats.last_error = ""
        await self.listener.caught_up()

    async def _poll(self) -> None:
        """Quiet for a while: does bitcoind's tip still equal ours? (A restart from an
        older tip, or a rollback whose notification was lost, says nothing on ZMQ.)"""
        self.stats.polls += 1
        best = hex_str_to_hash(await self.rpc.call("getbestblockhash"))
        tip = self.listener.chain_tip()
        if tip is None or tip.hash != best:
            log.info("bitcoind's tip moved without a notification; resyncing")
            await self._resync()

    # --- blocks -------------------------------------------------------------------------
    async def _sync_blocks(self) -> None:
        """Walk back what bitcoind no longer has, then connect up to its tip."""
        async with self.chain_lock:
            while not await self._sync_blocks_once():
                log.info("bitcoind's chain changed during catch-up; again")

    async def _sync_blocks_once(self) -> bool:
        node_height = int(await self.rpc.call("getblockcount"))
        if self.listener.chain_tip() is None:
            await self.listener.start_fresh(node_height)
        rolled = 0
        while (tip := self.listener.chain_tip()) is not None:
            # By height: a block above bitcoind's tip is not asked about (bitcoind
            # restarted behind us does not know it: "Block not found").
            if tip.height <= node_height:
                if hex_str_to_hash(await self.rpc.call("getblockhash", tip.height)) == tip.hash:
                    break
            if not await self.listener.block_disconnected(tip):
                raise ChainBehind(f"bitcoind's chain (height {node_height}) leaves ours "
                                  f"below block {tip.height}, deeper than can be undone; "
                                  "waiting for bitcoind")
            rolled += 1
        if rolled:
            self.stats.reorgs += 1
            self.stats.rolled_back += rolled
            log.info("bitcoind's chain changed: rolled back %d blocks", rolled)
        height = tip.height + 1 if tip else 0
        while height <= node_height:
            end = min(node_height, height + _HEADER_BATCH - 1)
            hashes = await self.rpc.batch([("getblockhash", [h]) for h in range(height, end + 1)])
            for h, block_hash in zip(range(height, end + 1), hashes, strict=True):
                if isinstance(block_hash, Exception):  # the node reorged under us
                    return False
                if not await self._connect(h, block_hash):
                    return False
            height = end + 1
            node_height = max(node_height, int(await self.rpc.call("getblockcount")))
        return True

    async def _connect(self, height: int, hash_hex: str) -> bool:
        """Connect block ``height``; False if it does not extend the tip."""
        tip = self.listener.chain_tip()
        expected_prev = tip.hash if tip else bytes(32)
        started = time.perf_counter()
        raw, pruned = await self._fetch_block(hash_hex) if self.listener.needs_blocks() \
            else (None, False)
        block: Block | None = None
        if raw is None:
            header = parse_header(bytes.fromhex(
                await self.rpc.call("getblockheader", hash_hex, False)))
        else:
            block = await parse_block_aside(raw)
            header = block.header
        if header.prev_hash != expected_prev and height > 0:
            return False
        await self.listener.block_connected(ConnectedBlock(height, header, block, pruned))
        self._count(block, started)
        return True

    def _count(self, block: Block | None, started: float) -> None:
        if block is None:
            self.stats.headers_only += 1
            return
        self.stats.blocks += 1
        self.stats.last_block_ms = (time.perf_counter() - started) * 1000

    async def _fetch_block(self, hash_hex: str) -> tuple[bytes | None, bool]:
        """(raw block, pruned): the block from disk; if pruned, from a peer when the
        listener wants it (via ``getblockfrompeer``), else (None, True)."""
        try:
            return bytes.fromhex(await self.rpc.call("getblock", hash_hex, 0)), False
        except RPCError as exc:
            if exc.code != RPC_MISC_ERROR:
                raise
        if not await self.listener.wants_pruned(hex_str_to_hash(hash_hex)):
            return None, True
        return await self.fetch_from_peer(hash_hex), True

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

    async def _on_rawblock(self, raw: bytes) -> None:
        header = parse_header(raw[:80])
        tip = self.listener.chain_tip()
        if tip is not None and header.hash == tip.hash:
            return  # already connected during catch-up
        if tip is None or header.prev_hash != tip.hash:
            await self._resync()  # a reorg, or we missed blocks
            return
        async with self.chain_lock:
            if self.listener.chain_tip() != tip:  # changed while we waited for the lock
                return
            started = time.perf_counter()
            block = await parse_block_aside(raw)
            await self.listener.block_connected(ConnectedBlock(tip.height + 1, block.header,
                                                               block))
            self._count(block, started)
        await self._caught_up()

    # --- mempool ------------------------------------------------------------------------
    async def _on_rawtx(self, raw: bytes) -> None:
        tx = parse_tx(raw)
        if tx.txid in self._awaiting:
            del self._awaiting[tx.txid]
            await self.listener.tx_added(tx)
            return
        old = self._bodies.pop(tx.txid, None)
        if old is not None:
            self._body_bytes -= len(old.raw)
        self._bodies[tx.txid] = tx
        self._body_bytes += len(raw)
        while self._body_bytes > _BODY_BYTES:
            _, gone = self._bodies.popitem(last=False)
            self._body_bytes -= len(gone.raw)

    async def _on_sequence(self, body: bytes) -> None:
        if len(body) == 41 and body[32] == _TX_ADDED:
            # Half of a mempool burst's messages: no enum, hex or event object (the hash
            # is sent in display order; ours is reversed).
            await self._tx_announced(body[31::-1])
            return
        event = parse_sequence(body)
        block_or_txid = hex_str_to_hash(event.hash_hex)
        if event.label == SequenceLabel.BLOCK_DISCONNECTED:
            tip = self.listener.chain_tip()
            if tip is not None and tip.hash == block_or_txid:
                # Its transactions go back to bitcoind's mempool with no "A" event:
                # read the mempool too.
                log.info("bitcoind disconnected our tip %d without a new block", tip.height)
                await self._resync()
        elif event.label == SequenceLabel.TX_ADDED:
            await self._tx_announced(block_or_txid)
        elif event.label == SequenceLabel.TX_REMOVED:
            self._awaiting.pop(block_or_txid, None)
            await self.listener.tx_removed(block_or_txid)

    async def _tx_announced(self, txid: bytes) -> None:
        """Sequence "A": the body if ``rawtx`` brought it, else wait for it."""
        tx = self._bodies.pop(txid, None)
        if tx is None:
            self._awaiting[txid] = None
            while len(self._awaiting) > _AWAITING:
                self._awaiting.popitem(last=False)
            return
        self._body_bytes -= len(tx.raw)
        await self.listener.tx_added(tx)

    async def sync_mempool(self) -> None:
        """Hand the listener bitcoind's whole mempool (read only if it iterates)."""
        await self.listener.mempool_resync(self._mempool_txs())

    async def _mempool_txs(self) -> AsyncIterator[Tx]:
        txids: list[str] = await self.rpc.call("getrawmempool")
        for start in range(0, len(txids), _MEMPOOL_BATCH):
            chunk = txids[start:start + _MEMPOOL_BATCH]
            raws = await self.rpc.batch([("getrawtransaction", [t]) for t in chunk])
            for raw in raws:
                if isinstance(raw, str):  # else: left the mempool meanwhile
                    yield parse_tx(bytes.fromhex(raw))

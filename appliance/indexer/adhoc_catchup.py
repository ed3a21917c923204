"""What a script had just before a client subscribed to it (ad-hoc watch catch-up).

From the moment of the subscription the follower matches the script in every block and
mempool transaction. What happened shortly before is found here, cheaply:

* the last ``ADHOC_RESCAN_BLOCKS`` blocks are read again from bitcoind and matched
  against the new scripthashes (their outputs, and spends of those outputs), so an
  output confirmed just before the subscription is in the index;
* the mempool slice (transactions kept for wallets) and the follower's ring of recent
  raw mempool transactions are matched too: a channel's funding transaction broadcast
  a moment before the peer subscribed to its address is found; and bitcoind's
  ``gettxspendingprevout`` names the mempool spender of any output the rescan found,
  however long ago it arrived.

Older outputs are not: only the scripthash is known, so neither BIP158 filters nor
``scantxoutset`` (a descriptor, minutes per call on a Pi) can look for the script. New
subscriptions are batched: one pass serves all scripts that arrived meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..chain import (
    ChainParseError,
    double_sha256,
    hash_to_hex_str,
    hex_str_to_hash,
    parse_block,
    parse_tx,
)
from ..chain import script_to_scripthash as scripthash_of
from ..durability import WriteFailed
from ..node import BitcoinRPC, NodeError, RPCError
from .adhoc import ADHOC_RESCAN_BLOCKS
from .follower import IndexListener, ScripthashListener
from .index import Indexer
from .matcher import match_txs, outpoint

__all__ = ["AdhocCatchUp"]

log = logging.getLogger("indexer.adhoc")

_RPC_MISC_ERROR = -1  # "Block not available (pruned data)"
_WRITE_RETRY_S = 10.0  # a full disk: the pass is tried again this much later


class AdhocCatchUp:
    def __init__(self, indexer: Indexer, follower: IndexListener, rpc: BitcoinRPC,
                 on_scripthashes: ScripthashListener,
                 depth: int = ADHOC_RESCAN_BLOCKS) -> None:
        self.indexer = indexer
        self.follower = follower
        self.rpc = rpc
        self.on_scripthashes = on_scripthashes
        self.depth = depth
        self.pending: set[bytes] = set()
        self.wakeup = asyncio.Event()
        self.passes = 0
        self.last_pass_ms = 0.0
        self.write_failed = False

    def add(self, scripthash: bytes) -> None:
        self.pending.add(scripthash)
        self.wakeup.set()

    async def run(self) -> None:
        await self.follower.synced.wait()
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            shs = {sh for sh in self.pending if sh in self.indexer.adhoc}
            self.pending.clear()
            if not shs:
                continue
            try:
                touched = await self.catch_up(shs)
            except (NodeError, ChainParseError) as exc:
                # The scripts stay watched from now on; only the look back is lost.
                log.warning("ad-hoc catch-up of %d script(s) failed: %s", len(shs), exc)
                continue
            except WriteFailed as exc:
                # A full disk: what was written stays (a rescan writes the same rows
                # again), the rest is tried again later, not lost.
                log.log(logging.DEBUG if self.write_failed else logging.WARNING,
                        "ad-hoc catch-up of %d script(s) not stored: %s; retrying",
                        len(shs), exc.text)
                self.write_failed = True
                self.pending |= shs
                await asyncio.sleep(_WRITE_RETRY_S)
                self.wakeup.set()
                continue
            self.write_failed = False
            if touched:
                await self.on_scripthashes(touched)

    async def catch_up(self, shs: set[bytes]) -> set[bytes]:
        started = time.perf_counter()
        touched = await self.rescan_blocks(shs)
        touched |= await self.match_mempool(shs)
        self.passes += 1
        self.last_pass_ms = (time.perf_counter() - started) * 1000
        log.info("ad-hoc catch-up of %d script(s): %d with history, %.0f ms", len(shs),
                 len(touched & shs), self.last_pass_ms)
        return touched

    async def rescan_blocks(self, shs: set[bytes]) -> set[bytes]:
        """The last ``depth`` blocks, oldest first, under the chain lock (no block
        connects meanwhile, and a reorg cannot interleave)."""
        idx = self.indexer
        touched: set[bytes] = set()

        def watched(script: bytes) -> bool:
            return scripthash_of(script) in shs

        def lookup(op: bytes) -> tuple[bytes, int] | None:
            rec = idx.store.output(op[:32], int.from_bytes(op[32:], "big"))
            return (rec.scripthash, rec.value) if rec and rec.scripthash in shs else None

        async with self.follower.chain_lock:
            tip = idx.tip()
            if tip is None:
                return touched
            for height in range(max(0, tip[0] - self.depth + 1), tip[0] + 1):
                header = idx.store.header(height)
                if header is None:
                    continue
                block_hash = double_sha256(header)
                try:
                    raw = await self.rpc.call("getblock", hash_to_hex_str(block_hash), 0)
                except RPCError as exc:
                    if exc.code == _RPC_MISC_ERROR:  # pruned: nothing to read
                        continue
                    raise
                block = parse_block(bytes.fromhex(raw))
                matches = match_txs(block.txs, watched, lookup)
                if not matches:
                    continue
                batch = idx.store.begin_block(height)
                touched |= idx.write_matches(batch, height, [t.txid for t in block.txs], matches)
                idx.store.commit_backfill(batch)
                for m in matches:
                    for f in m.funding:
                        if idx.store.spender(m.tx.txid, f.vout) is None:
                            idx.unspent[outpoint(m.tx.txid, f.vout)] = (f.scripthash, f.value)
                    for s in m.spending:
                        idx.unspent.pop(outpoint(s.prev_txid, s.prev_vout), None)
        return touched

    async def match_mempool(self, shs: set[bytes]) -> set[bytes]:
        idx = self.indexer
        follower = self.follower
        touched: set[bytes] = set()
        # Kept for a wallet, and touching a new script too (alice's funding tx pays her
        # change): match again so the new scripthash gets the entry.
        for entry in list(idx.mempool.txs.values()):
            tx = entry.tx
            pays = any(scripthash_of(o.script_pubkey) in shs for o in tx.outputs)
            spends = any(idx.unspent.get(outpoint(i.prev_hash, i.prev_idx), (b"",))[0] in shs
                         for i in tx.inputs)
            if pays or spends:
                touched |= idx.mempool.remove(tx.txid)
                try:
                    touched |= await follower.add_mempool_tx(tx, notify=False)
                except WriteFailed:
                    idx.mempool.add(entry)  # as it was: clients keep seeing it
                    raise
        # Confirmed outputs of the new scripts (found by the rescan) that a mempool tx
        # spends, however long ago it arrived: bitcoind knows by outpoint.
        ours = [op for op, (sh, _v) in idx.unspent.items() if sh in shs]
        if ours:
            spends = await self.rpc.call("gettxspendingprevout", [
                {"txid": hash_to_hex_str(op[:32]), "vout": int.from_bytes(op[32:], "big")}
                for op in ours])
            for item in spends:
                spender = item.get("spendingtxid")
                if spender is None or hex_str_to_hash(spender) in idx.mempool:
                    continue
                try:
                    raw = await self.rpc.call("getrawtransaction", spender)
                except RPCError:
                    continue  # mined or replaced meanwhile: the follower has it
                touched |= await follower.add_mempool_tx(parse_tx(bytes.fromhex(raw)),
                                                         notify=False)
        # Seen recently, ours or not (in arrival order, so parents come first).
        for raw in list(follower.recent_raw):
            tx = parse_tx(raw)
            if tx.txid not in idx.mempool and follower.prematch(tx):
                touched |= await follower.add_mempool_tx(tx, notify=False)
        return touched

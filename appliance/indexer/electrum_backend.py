"""``ElectrumBackend`` over the index: what the Electrum protocol core asks, answered from
LevelDB and the in-memory mempool slice, with bitcoind for fees and broadcasting.

Nothing here reads a pruned block at query time: raw transactions, heights, positions
and merkle branches of the wallets' transactions were stored when their blocks arrived.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from ..chain import MerkleTree, double_sha256, hash_to_hex_str, hex_str_to_hash
from ..electrum.backend import (
    BackendError,
    HistoryItem,
    MerkleProof,
    ScripthashListener,
    TipListener,
    Utxo,
)
from ..node import BitcoinRPC, NodeError, RPCError
from .index import Indexer
from .matcher import outpoint

__all__ = ["IndexBackend"]

_HISTOGRAM_TTL = 30.0  # seconds: getrawmempool verbose is heavy on a Pi
#: How long a query for a script past the gap waits for its history (a gap job scans
#: the block filters from the wallet's birthday) before it is answered with what is
#: known so far; a subscription then notifies when the job completes.
HISTORY_WAIT_S = 10.0

log = logging.getLogger("indexer.electrum")


def _btc_per_kvb(value: Any) -> float:
    return float(Decimal(value))


class IndexBackend:
    def __init__(self, indexer: Indexer, rpc: BitcoinRPC,
                 on_gap_extended: Callable[[], None] | None = None,
                 on_adhoc: Callable[[bytes], None] | None = None) -> None:
        self.indexer = indexer
        self.rpc = rpc
        self.on_gap_extended = on_gap_extended
        #: a new ad-hoc watch: look back for what it had (AdhocCatchUp.add)
        self.on_adhoc = on_adhoc
        #: whether some session subscribes to a scripthash (SessionManager.is_subscribed)
        self.is_subscribed: Callable[[bytes], bool] = lambda sh: False
        self.tip_listeners: list[TipListener] = []
        self.scripthash_listeners: list[ScripthashListener] = []
        self._cp_cache: tuple[int, MerkleTree] | None = None
        self._histogram: tuple[float, list[tuple[float, int]]] | None = None

    # --- listeners (the follower calls these) ---------------------------------------------
    def add_listeners(self, on_tip: TipListener, on_scripthashes: ScripthashListener) -> None:
        self.tip_listeners.append(on_tip)
        self.scripthash_listeners.append(on_scripthashes)

    async def notify_tip(self, height: int, header: bytes) -> None:
        for listener in self.tip_listeners:
            await listener(height, header)

    async def notify_scripthashes(self, scripthashes: set[bytes]) -> None:
        for listener in self.scripthash_listeners:
            await listener(scripthashes)

    # --- chain --------------------------------------------------------------------------
    @property
    def genesis_hash(self) -> bytes:
        header = self.indexer.store.header(0)
        if header is None:
            raise BackendError("the index has no headers yet", 2)
        return double_sha256(header)

    def tip(self) -> tuple[int, bytes]:
        tip = self.indexer.tip()
        header = self.indexer.store.header(tip[0]) if tip else None
        if tip is None or header is None:
            raise BackendError("the index is still starting", 2)
        return tip[0], header

    async def headers(self, start_height: int, count: int) -> list[bytes]:
        height, _ = self.tip()
        count = min(count, height + 1 - start_height)
        return self.indexer.store.headers(start_height, count) if count > 0 else []

    async def header_branch(self, height: int, cp_height: int) -> tuple[list[bytes], bytes]:
        tip_height, _ = self.tip()
        if not 0 <= height <= cp_height <= tip_height:
            raise BackendError(f"header height {height} must be <= cp_height {cp_height} "
                               f"<= tip {tip_height}")
        if self._cp_cache is None or self._cp_cache[0] != cp_height:
            # Clients use a fixed checkpoint, so one tree serves them all.
            hashes = [double_sha256(h) for h in self.indexer.store.headers(0, cp_height + 1)]
            self._cp_cache = (cp_height, MerkleTree(hashes))
        tree = self._cp_cache[1]
        return tree.branch(height), tree.root

    # --- scripthashes -------------------------------------------------------------------
    async def history(self, scripthash: bytes) -> list[HistoryItem]:
        confirmed = [HistoryItem(txid, height) for height, _pos, txid
                     in self.indexer.store.history(scripthash)]
        return confirmed + await self.mempool(scripthash)

    async def mempool(self, scripthash: bytes) -> list[HistoryItem]:
        return [HistoryItem(e.txid, e.height, e.fee)
                for e in self.indexer.mempool.entries(scripthash)]

    async def balance(self, scripthash: bytes) -> tuple[int, int]:
        provisional = self.indexer.provisional.get(scripthash)
        if provisional is not None:  # wallet still backfilling: scantxoutset's answer
            return sum(u.value for u in provisional), 0
        mempool = self.indexer.mempool
        confirmed = unconfirmed = 0
        for rec in self.indexer.store.outputs(scripthash):
            if self.indexer.store.spender(rec.txid, rec.vout) is None:
                confirmed += rec.value
                if outpoint(rec.txid, rec.vout) in mempool.spent:
                    unconfirmed -= rec.value
        for op, (sh, value) in mempool.created.items():
            if sh == scripthash:
                unconfirmed += value
                if op in mempool.spent:
                    unconfirmed -= value
        return confirmed, unconfirmed

    async def unspent(self, scripthash: bytes) -> list[Utxo]:
        provisional = self.indexer.provisional.get(scripthash)
        if provisional is not None:
            return list(provisional)
        mempool = self.indexer.mempool
        out = [Utxo(rec.txid, rec.vout, rec.height, rec.value)
               for rec in self.indexer.store.outputs(scripthash)
               if self.indexer.store.spender(rec.txid, rec.vout) is None
               and outpoint(rec.txid, rec.vout) not in mempool.spent]
        for op, (sh, value) in mempool.created.items():
            if sh == scripthash and op not in mempool.spent:
                out.append(Utxo(op[:32], int.from_bytes(op[32:], "big"), 0, value))
        out.sort(key=lambda u: (u.height if u.height > 0 else 1 << 31, u.txid[::-1], u.vout))
        return out

    def is_watched(self, scripthash: bytes) -> bool:
        return self.indexer.is_watched_scripthash(scripthash)

    async def script_queried(self, scripthash: bytes) -> None:
        """A client asked for ``scripthash``. Past the gap: watch it and wait (bounded by
        HISTORY_WAIT_S) until its history is complete, so the first answer is right."""
        if not self.is_watched(scripthash) and await self.indexer.extend_on_query(scripthash):
            if self.on_gap_extended is not None:
                self.on_gap_extended()
        pending = self.indexer.history_pending(scripthash)
        if pending is not None:
            try:
                await asyncio.wait_for(pending.wait(), HISTORY_WAIT_S)
            except TimeoutError:
                log.warning("history of %s… still being scanned after %.0f s; answering "
                            "what is known", scripthash.hex()[:16], HISTORY_WAIT_S)

    def watch_script(self, scripthash: bytes) -> bool:
        new = self.indexer.watch_adhoc(scripthash, int(time.time()), self.is_subscribed)
        if new and self.on_adhoc is not None:
            self.on_adhoc(scripthash)
        return new

    # --- transactions -------------------------------------------------------------------
    async def transaction(self, txid: bytes) -> bytes:
        raw = self.indexer.store.tx(txid)
        if raw is not None:
            return bytes(raw)
        entry = self.indexer.mempool.txs.get(txid)
        if entry is not None:
            return entry.tx.raw
        try:  # any mempool transaction, or a confirmed one if bitcoind has a txindex
            return bytes.fromhex(await self.rpc.call("getrawtransaction", hash_to_hex_str(txid)))
        except RPCError:
            raise BackendError(f"no transaction {hash_to_hex_str(txid)} in the index or "
                               "mempool (the box indexes only its wallets)", 2) from None
        except NodeError as exc:
            raise BackendError(f"bitcoind unavailable: {exc}", 2) from None

    async def transaction_verbose(self, txid: bytes) -> dict[str, Any]:
        raw = await self.transaction(txid)
        try:
            result: dict[str, Any] = await self.rpc.call("decoderawtransaction", raw.hex())
        except NodeError as exc:
            raise BackendError(f"bitcoind unavailable: {exc}", 2) from None
        result["hex"] = raw.hex()
        conf = self.indexer.store.confirmation(txid)
        tip = self.indexer.tip()
        if conf is not None and tip is not None:
            header = self.indexer.store.header(conf[0])
            if header is not None:
                result["blockhash"] = hash_to_hex_str(double_sha256(header))
                result["confirmations"] = tip[0] - conf[0] + 1
                result["time"] = result["blocktime"] = int.from_bytes(header[68:72], "little")
        floats: dict[str, Any] = _floats(result)
        return floats

    async def merkle_proof(self, txid: bytes, height: int) -> MerkleProof:
        conf = self.indexer.store.confirmation(txid)
        if conf is None or conf[0] != height:
            raise BackendError(f"tx {hash_to_hex_str(txid)} not in block at height {height}")
        return MerkleProof(conf[0], conf[1], conf[2])

    async def id_from_pos(self, height: int, pos: int) -> tuple[bytes, list[bytes]]:
        try:
            block_hash = await self.rpc.call("getblockhash", height)
            block = await self.rpc.call("getblock", block_hash, 1)
        except RPCError as exc:
            raise BackendError(f"block {height} not available: {exc.message}") from None
        txids = [hex_str_to_hash(t) for t in block["tx"]]
        if not 0 <= pos < len(txids):
            raise BackendError(f"no tx at position {pos} in block {height}")
        return txids[pos], MerkleTree(txids).branch(pos)

    async def broadcast(self, raw_tx: bytes) -> bytes:
        try:
            txid_hex = await self.rpc.call("sendrawtransaction", raw_tx.hex())
        except RPCError as exc:
            raise BackendError(f"the transaction was rejected by network rules.\n\n"
                               f"{exc.message}", 1) from None
        except NodeError as exc:
            raise BackendError(f"bitcoind unavailable: {exc}", 2) from None
        return hex_str_to_hash(txid_hex)

    async def broadcast_package(self, raw_txs: list[bytes]) -> dict[str, Any]:
        try:
            result: dict[str, Any] = await self.rpc.call("submitpackage",
                                                         [r.hex() for r in raw_txs])
        except RPCError as exc:
            raise BackendError(f"the package was rejected: {exc.message}", 1) from None
        except NodeError as exc:
            raise BackendError(f"bitcoind unavailable: {exc}", 2) from None
        floats: dict[str, Any] = _floats(result)
        return floats

    # --- fees and mempool ---------------------------------------------------------------
    async def estimate_fee(self, blocks: int, mode: str | None) -> float:
        params: list[Any] = [blocks] + ([mode] if mode else [])
        try:
            result = await self.rpc.call("estimatesmartfee", *params)
        except RPCError as exc:
            raise BackendError(exc.message) from None
        return _btc_per_kvb(result["feerate"]) if "feerate" in result else -1.0

    async def relay_fee(self) -> float:
        info = await self.rpc.call("getnetworkinfo")
        return _btc_per_kvb(info["relayfee"])

    async def fee_histogram(self) -> list[tuple[float, int]]:
        now = time.monotonic()
        if self._histogram is not None and now - self._histogram[0] < _HISTOGRAM_TTL:
            return self._histogram[1]
        entries = await self.rpc.call("getrawmempool", True)
        rates = sorted(((float(Decimal(e["fees"]["base"]) * 100_000_000) / e["vsize"],
                         int(e["vsize"])) for e in entries.values()), reverse=True)
        # ElectrumX's compaction: bins of growing size, so the list stays short.
        histogram: list[tuple[float, int]] = []
        bin_size, bin_limit = 0, 100_000 * 0.1
        prev_rate = None
        for rate, vsize in rates:
            if bin_size > bin_limit and rate != prev_rate:
                histogram.append((round(prev_rate or rate, 2), bin_size))
                bin_size, bin_limit = 0, bin_limit * 1.1
            bin_size += vsize
            prev_rate = rate
        if bin_size:
            histogram.append((round(prev_rate or 0.0, 2), bin_size))
        self._histogram = (now, histogram)
        return histogram

    async def mempool_info(self) -> dict[str, Any]:
        info = await self.rpc.call("getmempoolinfo")
        return {k: _btc_per_kvb(info[k]) for k in
                ("mempoolminfee", "minrelaytxfee", "incrementalrelayfee") if k in info}


def _floats(value: Any) -> Any:
    """bitcoind's Decimals as JSON floats (what Electrum servers send)."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats(v) for v in value]
    return value

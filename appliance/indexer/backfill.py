"""History for wallets registered after the fact, even from blocks bitcoind has pruned.

Order for a new wallet (state ``new`` -> ``backfill`` -> ``live``):

1. ``scantxoutset`` over its descriptors, beside step 2 (bitcoind walks its UTXO set on
   another core, minutes on a Pi, while we match blocks): the current UTXOs, so balances
   show while the rest runs. Coins it finds at an index past the gap the block scan
   reached (paid out of order) are taken in once the wallet is live: the gap moves past
   them and a job backfills the new scripts (see step 3).
2. From the wallet's birthday to the index tip, each block's BIP158 filter
   (``getblockfilter``) is matched against the wallet's scripts; only matching blocks
   are fetched, from disk while bitcoind keeps them, else with ``getblockfrompeer``.
   Filters cover spent prevout scripts too, so spends are found without an outpoint
   index. Without a filter index, kept blocks are scanned in full instead; so are they
   while filters rule out (almost) no block, as for a busy wallet whose every block
   holds a transaction (see ``_Costs``). Matching blocks are fetched ahead, in RPC
   batches, while earlier ones are applied (``_Prefetch``), and screened at byte level
   (``screen.py``): only their transactions that may touch the scope become objects.
3. When the backfill reaches the tip, the wallet turns live while holding the chain
   lock, so no block is missed or counted twice between backfill and live indexing;
   only its own scripts are touched (cost linear in them), yielding to the event loop
   as it goes, and its mempool transactions are added without emptying the slice.

Gap jobs (scripts a client asked for past the gap) run the same way over just their
scripts; the client's query waits for its job (see ``IndexBackend.script_queried``).
Every long loop here calls ``Pacer.tick()``, so clients keep being answered.

Progress (percent, ETA) is kept per wallet for the status page.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Container
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ..chain import double_sha256, hash_to_hex_str, hex_str_to_hash
from ..chain.utxo import Utxo
from ..durability import WriteFailed
from ..node import BitcoinRPC, NodeError, RPCError
from ..node.pace import ASIDE_BYTES, Pacer
from . import heap
from .bip158 import GCSFilter, ScriptSet, filter_size
from .blocks import BlockSource
from .follower import IndexListener, ScripthashListener
from .index import Indexer
from .matcher import outpoint
from .screen import ScreenedBlock, screen_block
from .wallets import Wallet, scripthash_of

__all__ = ["Backfiller", "BackfillProgress"]

log = logging.getLogger("indexer.backfill")

_FILTER_BATCH = 200
_FIRST_BATCH = 20
_PREFETCH = 10  # matching blocks per getblock batch without REST (~30 MB of hex on mainnet)
_PREFETCH_BYTES = 32 << 20  # blocks held ahead of matching, at most
_PROBES = 4  # small blocks read per batch while learning what a read costs
_SAVE_EVERY = 1_000  # persist progress this often when nothing matches (SD card writes)


@dataclass
class BackfillProgress:
    start: int
    end: int
    done: int = 0
    matched_blocks: int = 0
    fetched_from_peer: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def percent(self) -> float:
        total = self.end - self.start + 1
        return 100.0 if total <= 0 else min(100.0, 100.0 * self.done / total)

    @property
    def eta_seconds(self) -> float | None:
        elapsed = time.monotonic() - self.started
        if self.done == 0 or elapsed <= 0:
            return None
        remaining = (self.end - self.start + 1) - self.done
        return max(0.0, remaining * elapsed / self.done)

    def as_dict(self) -> dict[str, Any]:
        eta = self.eta_seconds
        return {"start": self.start, "end": self.end, "percent": round(self.percent, 1),
                "eta_s": None if eta is None else round(eta), "matched_blocks":
                self.matched_blocks, "fetched_from_peer": self.fetched_from_peer}


class Backfiller:
    def __init__(self, indexer: Indexer, follower: IndexListener, rpc: BitcoinRPC,
                 on_scripthashes: ScripthashListener) -> None:
        self.indexer = indexer
        self.follower = follower
        self.rpc = rpc
        self.blocks = BlockSource(rpc)
        self.on_scripthashes = on_scripthashes
        self.progress: dict[bytes, BackfillProgress] = {}
        self.wakeup = asyncio.Event()
        self.errors: dict[bytes, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._utxo_scans: dict[bytes, asyncio.Task[None]] = {}
        #: indices holding coins per branch, found by scantxoutset, until taken in
        self._utxo_found: dict[bytes, dict[int, int]] = {}
        self._utxo_lock = asyncio.Lock()  # bitcoind runs one scantxoutset at a time

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self.blocks.close()
            for task in self._utxo_scans.values():
                task.cancel()

    async def _run(self) -> None:
        await self.follower.synced.wait()
        while True:
            self.wakeup.clear()
            for wid in list(self.indexer.wallets):
                wallet = self.indexer.wallets.get(wid)
                if wallet is None or wid in self.indexer.registering:
                    continue  # (a wallet being registered wakes this loop once done)
                try:
                    if not wallet.utxos_scanned:
                        self._scan_utxos_aside(wid)
                    if wallet.state != "live":
                        await self.backfill(wallet)
                    for job in list(wallet.jobs):
                        await self.run_job(wallet, job)
                    self.errors.pop(wid, None)
                    self.indexer.stalled.discard(wid)
                except (NodeError, RuntimeError, WriteFailed) as exc:
                    # bitcoind away, a pruned block no peer serves, a full disk: retried,
                    # and meanwhile queries of this wallet's gap scripts do not wait.
                    again = self.errors.get(wid) == str(exc)
                    self.errors[wid] = str(exc)
                    if isinstance(exc, WriteFailed):  # memory back to what the disk holds
                        await self.indexer.restore()
                    self.indexer.stall(wid)
                    # Once per cause: a full disk is retried every 5 s for hours.
                    log.log(logging.DEBUG if again else logging.WARNING,
                            "backfill of wallet %s paused: %s", wallet.id_hex, exc)
                    await asyncio.sleep(5)
                    self.wakeup.set()
            if not self._pending():
                await self.wakeup.wait()

    def _pending(self) -> bool:
        return any((w.state != "live" or w.jobs) and wid not in self.indexer.registering
                   for wid, w in self.indexer.wallets.items())

    # --- step 1: current UTXOs, beside the blocks -------------------------------------
    def _scan_utxos_aside(self, wid: bytes) -> None:
        if wid in self._utxo_scans or wid in self._utxo_found:
            return  # running, or done and waiting for the wallet to go live
        task = asyncio.get_running_loop().create_task(self._scan_utxos(wid))
        self._utxo_scans[wid] = task
        task.add_done_callback(lambda _: self._utxo_scans.pop(wid, None))

    async def _scan_utxos(self, wid: bytes) -> None:
        """scantxoutset for one wallet; its coins past the gap are taken in once live."""
        async with self._utxo_lock:
            wallet = self.indexer.wallets.get(wid)
            if wallet is None or wallet.utxos_scanned:
                return
            try:
                self._utxo_found[wid] = await self._coins_now(wallet)
            except NodeError as exc:  # bitcoind away: the next pass of ``_run`` retries
                log.warning("scantxoutset for wallet %s paused: %s", wallet.id_hex, exc)
                return
        await self._take_in_utxo_scan(wid)

    async def _take_in_utxo_scan(self, wid: bytes) -> None:
        """Once the wallet is live (and its scan is done), move the gap past the coins the
        block scan did not reach; a job backfills the scripts that adds."""
        async with self.follower.chain_lock:
            wallet = self.indexer.wallets.get(wid)
            if wallet is None:
                self._utxo_found.pop(wid, None)
                return
            if wallet.state != "live" or wid not in self._utxo_found:
                return  # taken in when it goes live / when the scan ends
            found = self._utxo_found.pop(wid)
            wallet.utxos_scanned = True
            try:
                added = await self.indexer.raise_used(wid, found)
            except (NodeError, WriteFailed) as exc:
                # bitcoind away while deriving, a full disk: scanned again later.
                log.warning("coins past the gap of wallet %s not taken in yet: %s",
                            wallet.id_hex, exc)
                wallet.utxos_scanned = False
                if isinstance(exc, WriteFailed):
                    await self.indexer.restore()  # memory back to what the disk holds
                asyncio.get_running_loop().call_later(5, self.wakeup.set)
                return
        if added:
            self.wakeup.set()

    async def _coins_now(self, wallet: Wallet) -> dict[int, int]:
        """The wallet's coins now: shown as its balances while it backfills. Returns the
        highest index holding coins on each branch (empty if bitcoind refused)."""
        scan = [{"desc": b.descriptor, "range": max(b.derived, 1000) if b.ranged else None}
                for b in wallet.branches]
        for item in scan:
            if item["range"] is None:
                del item["range"]
        wid = wallet.wallet_id
        try:
            result = await self.rpc.call("scantxoutset", "start", scan, timeout=3600)
        except RPCError as exc:
            log.warning("scantxoutset failed for wallet %s: %s", wallet.id_hex, exc.message)
            return {}
        provisional: dict[bytes, list[Utxo]] = {}
        found: dict[int, int] = {}
        descriptors = [b.descriptor for b in wallet.branches]
        pacer = Pacer()  # thousands of coins: ~30 us each here
        for u in result.get("unspents", []):
            await pacer.tick()
            sh = scripthash_of(bytes.fromhex(u["scriptPubKey"]))
            provisional.setdefault(sh, []).append(Utxo(
                hex_str_to_hash(u["txid"]), int(u["vout"]), int(u["height"]),
                int(Decimal(u["amount"]) * 100_000_000)))
            desc = u.get("desc", "")
            for bi, branch_desc in enumerate(descriptors):
                index = _index_in(desc, branch_desc)
                if index is not None and index > found.get(bi, -1):
                    found[bi] = index
        current = self.indexer.wallets.get(wid)  # afresh: it may have gone live meanwhile
        if current is not None and current.state != "live":
            self.indexer.provisional.update(provisional)
        log.info("wallet %s: %d unspent outputs found by scantxoutset", wid.hex(),
                 sum(len(v) for v in provisional.values()))
        return found

    # --- step 2: blocks -----------------------------------------------------------------
    async def backfill(self, wallet: Wallet) -> None:
        """A whole wallet, from its birthday, then turn it live."""
        idx = self.indexer
        wid = wallet.wallet_id
        if wallet.state == "new":
            new = await idx.derive_wallet(wallet)
            idx._register_scripts(wallet, new)
            wallet.state = "backfill"
            wallet.utxos_scanned = False
            idx.store.put_wallet(wid, wallet.to_record(), new)
            self._scan_utxos_aside(wid)
        scope = _Scope(wid, None)
        while await self._scan(scope):
            if await self._go_live(scope):
                return

    async def run_job(self, wallet: Wallet, job: dict[str, int]) -> None:
        """Scripts a client asked for past a live wallet's gap: their history, then live."""
        scope = _Scope(wallet.wallet_id, (job["branch"], job["start"]))
        while await self._scan(scope):
            if await self._go_live(scope):
                return

    async def _scan(self, scope: _Scope) -> bool:
        """Filters (or blocks) from the scope's height to the tip; True when at the tip.

        Wallet objects are looked up afresh after every await: a reorg reloads them from
        the store (with the progress the rolled-back blocks had undone)."""
        idx = self.indexer
        has_filters = await self._has_filters()
        wallet = idx.wallets.get(scope.wid)
        tip = idx.tip()
        if wallet is None or tip is None:
            return False
        prog = BackfillProgress(scope.height(wallet) + 1, tip[0])
        self.progress[scope.key] = prog
        unsaved = 0
        pacer = Pacer()
        costs = _Costs()
        await scope.load_outputs(idx, pacer)
        while True:
            wallet = idx.wallets.get(scope.wid)
            tip = idx.tip()
            if wallet is None or tip is None or scope.wid in idx.registering:
                return False  # (registering: being removed)
            if scope.height(wallet) >= tip[0]:
                prog.done = prog.end - prog.start + 1
                return True
            prog.end = tip[0]
            start = scope.height(wallet) + 1
            # Short batches until the cost model below knows what a block costs: it
            # decides from them whether the next ones use filters at all (a fresh
            # 10,000-script wallet matched 200 filters, mostly false positives on busy
            # blocks, before the first choice).
            batch = _FIRST_BATCH if prog.done == 0 or not costs.known() else _FILTER_BATCH
            end = min(tip[0], start + batch - 1)
            headers = idx.store.headers(start, end - start + 1)
            hashes = [double_sha256(h) for h in headers]
            # Blocks are read without their filters (all, or small ones) only while
            # bitcoind keeps them: a pruned one would come from a peer.
            kept = has_filters and await self._kept(start)
            direct = kept and costs.filters_cost_more()
            if direct != costs.direct:
                costs.direct = direct
                log.info("wallet %s: %s from height %d", wallet.id_hex,
                         "filters rule out no block lately; reading blocks directly"
                         if direct else "matching filters again", start)
            # The scope's scripts change with ``version``; the filter query (repacked
            # when they do) is only built while filters are matched.
            version = scope.version(idx)
            use_filters = has_filters and not direct
            query = scope.query(idx) if use_filters else None
            if use_filters:
                filters = await self.rpc.batch(
                    [("getblockfilter", [hash_to_hex_str(h), "basic"]) for h in hashes])
                if scope.version(idx) != version:
                    continue  # the job grew while we waited: match these with all of it
            else:
                filters = [None] * len(hashes)
            matched = await self._matching(hashes, filters, query, pacer, costs, kept)
            prefetched = _Prefetch(self.blocks, matched)
            try:
                for offset, (block_hash, filt) in enumerate(zip(hashes, filters, strict=True)):
                    await pacer.tick()
                    height = start + offset
                    wallet = idx.wallets.get(scope.wid)
                    if wallet is None or idx.store.header(height) != headers[offset]:
                        break  # removed, or a reorg replaced this height: next round re-reads
                    if isinstance(filt, Exception):
                        raise RuntimeError(f"getblockfilter at {height}: {filt}")
                    if scope.version(idx) != version:
                        break  # the job grew (a client asked further): redo from here
                    if block_hash not in matched and query is not None and (
                            query is matched.query or not GCSFilter.from_hex(
                                block_hash, filt["filter"]).match_any(query)):
                        scope.set_height(wallet, height)
                        prog.done += 1
                        unsaved += 1
                        costs.ruled_out()
                        continue
                    began = time.perf_counter()
                    raw = await prefetched.take(block_hash) or await self._fetch(block_hash,
                                                                                  prog)
                    wallet = idx.wallets.get(scope.wid)
                    if wallet is None or idx.store.header(height) != headers[offset]:
                        break
                    touched = await self._apply(scope, wallet, raw, height)
                    costs.applied(time.perf_counter() - began, bool(touched),
                                  None if filt is None else filter_size(filt["filter"]),
                                  block_hash in matched.small)
                    version = scope.version(idx)  # the gap may have grown
                    query = scope.query(idx) if use_filters else None
                    prog.done += 1
                    unsaved = 0 if touched else unsaved + 1
                    if touched:
                        prog.matched_blocks += 1
                        await self.on_scripthashes(touched)
            finally:
                prefetched.close()
            wallet = idx.wallets.get(scope.wid)
            if wallet is not None and unsaved >= _SAVE_EVERY:
                idx.store.put_wallet(scope.wid, wallet.to_record())
                unsaved = 0

    async def _kept(self, height: int) -> bool:
        """Whether bitcoind still has the blocks from ``height`` on (not pruned)."""
        info = await self.rpc.call("getblockchaininfo")
        return not info.get("pruned") or height > int(info.get("pruneheight", 0)) + 1

    async def _has_filters(self) -> bool:
        try:
            info = await self.rpc.call("getindexinfo", "basic block filter index")
        except RPCError:
            return False
        return bool(info)

    @staticmethod
    async def _matching(hashes: list[bytes], filters: list[Any], query: ScriptSet | None,
                        pacer: Pacer, costs: _Costs, kept: bool) -> _Matched:
        """The blocks whose filter matches ``query`` (all of them without filters),
        matched once per batch and yielding between filters: with 10,000 scripts one
        match is milliseconds. While the blocks are ``kept`` locally, a block whose
        filter is so small that reading the block costs less than matching it
        (``_Costs.read_instead``) is taken without matching."""
        matched = _Matched(query)
        sizes = [filter_size(f["filter"]) if isinstance(f, dict) else None for f in filters]
        probe: set[int] = set()
        if kept and costs.probing():
            # No block read yet cost less than a match: read the smallest few to learn
            # (fetched ahead together, as they would be when read for their size).
            probe = {i for _, i in sorted((n, i) for i, n in enumerate(sizes)
                                           if n is not None)[:_PROBES]}
        for i, (h, f, n) in enumerate(zip(hashes, filters, sizes, strict=True)):
            await pacer.tick()
            if isinstance(f, Exception):
                continue
            if f is None:
                matched.append(h)
                continue
            if i in probe or (kept and n is not None and costs.read_instead(n)):
                matched.append(h)
                matched.small.add(h)
                continue
            if query is None:
                continue
            began = time.perf_counter()
            if GCSFilter.from_hex(h, f["filter"]).match_any(query):
                matched.append(h)
            costs.filtered(1, time.perf_counter() - began)
        return matched

    async def _fetch(self, block_hash: bytes, prog: BackfillProgress) -> bytes:
        hash_hex = hash_to_hex_str(block_hash)
        if self.blocks.rest and (raw := (await self.blocks.many([block_hash]))[0]):
            return raw
        try:
            return bytes.fromhex(await self.rpc.call("getblock", hash_hex, 0))
        except RPCError as exc:
            if exc.code != -1:
                raise
        prog.fetched_from_peer += 1
        log.info("block %s is pruned and matches the wallet's filter: fetching it from a peer",
                 hash_hex)
        return await self.follower.fetch_from_peer(hash_hex)

    async def _apply(self, scope: _Scope, wallet: Wallet, raw: bytes, height: int) -> set[bytes]:
        idx = self.indexer
        wid = wallet.wallet_id
        # Only transactions paying a known script or spending from a scope output's
        # transaction become objects (every script of the scope is in ``refs``).
        block = await screen_aside(raw, idx.scripts.refs, scope.funded)

        job = scope.job(wallet) if scope.job_key is not None else None
        branch, before = (job["branch"], wallet.branches[job["branch"]].derived) \
            if job is not None else (-1, 0)

        def watched(script: bytes) -> bool:  # dynamic: the gap may grow while matching
            if script in scope.script_set(idx):
                return True
            # Derived just now, past the job's end on its branch: it joins the job
            # below, and this very block may pay it.
            return job is not None and any(
                r.wallet_id == wid and r.branch == branch and r.index >= before
                for r in idx.scripts.refs.get(script, ()))

        matches, derived = await idx.match_with_gap(block, watched, scope.outputs.get, {wid})
        job = scope.job(wallet) if scope.job_key is not None else None
        if job is not None:
            # Scripts derived while scanning old blocks have old history too: they join
            # the job instead of going live without it.
            for (bi, index), script in derived.get(wid, {}).items():
                idx.scripts.live.discard(script)
                if bi == job["branch"]:
                    job["end"] = max(job["end"], index + 1)
                else:
                    wallet.jobs.append({"branch": bi, "start": index, "end": index + 1,
                                        "height": wallet.birthday - 1})
        if idx.store.header(height) != block.header.raw or wid in idx.registering:
            return set()  # reorged away while deriving, or the wallet is being removed
        if not matches and not derived.get(wid):
            # Nothing of ours (a block read for its size, or a filter's false positive):
            # progress only, saved as for blocks the filters rule out.
            scope.set_height(wallet, height)
            return set()
        batch = idx.store.begin_backfill(height)
        touched = idx.write_matches(batch, height, block.tree, matches)
        scope.set_height(wallet, height)
        idx.write_wallets(batch, {wid}, derived)
        await idx.commit_backfill(batch)
        for m in matches:
            for f in m.funding:
                scope.outputs[outpoint(m.tx.txid, f.vout)] = (f.scripthash, f.value)
                scope.funded.add(m.tx.txid)
        return touched

    # --- step 3: live ---------------------------------------------------------------------
    async def _go_live(self, scope: _Scope) -> bool:
        """Flip a wallet (or a job's scripts) live; False if blocks came meanwhile (scan
        again). The chain lock keeps blocks out until the flip is complete."""
        idx = self.indexer
        async with self.follower.chain_lock:
            wallet = idx.wallets.get(scope.wid)
            tip = idx.tip()
            if wallet is None or tip is None:
                return True
            if scope.height(wallet) < tip[0]:
                return False
            scripts = sorted(scope.script_set(idx))
            if scope.job_key is None:
                wallet.state = "live"
                scripts = [s for (b, i), s in idx.scripts.of_wallet(scope.wid).items()
                           if not wallet.pending(b, i)]
                what = "is live (history complete)"
            else:
                job = scope.job(wallet)
                if job is None:
                    return True
                wallet.jobs.remove(job)
                what = (f"scripts {job['start']}..{job['end'] - 1} of branch {job['branch']} "
                        "are live")
            await idx.store.put_wallet_aside(scope.wid, wallet.to_record())
            await idx.make_live(scripts, Pacer())
        if scope.job_key is not None:
            self.progress.pop(scope.key, None)
            idx.job_finished(scope.key)
        log.info("wallet %s: %s", wallet.id_hex, what)
        if scope.job_key is None:
            await self._take_in_utxo_scan(scope.wid)
        heap.settle()  # its scripts and outputs stay: keep full collections off them
        # Its mempool transactions were not tracked while it backfilled: add them (the
        # slice is topped up, never emptied, so clients never see it shrink).
        self._resync_mempool()
        return True

    def _resync_mempool(self) -> None:
        task = asyncio.get_running_loop().create_task(self.follower.sync_mempool())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _Costs:
    """Whether matching filters still pays for itself in this scan.

    A filter match costs about the same whatever the block (SipHash of every wallet
    script); it saves fetching and applying the blocks it rules out. When almost every
    block holds a wallet transaction (a busy wallet's years), the filters rule out
    nothing and matching them is pure cost: fetch the (locally kept) blocks directly
    until the share of blocks that touch the wallet drops again. Per block, a filter's
    element count says how big the block is: a small block (early chain years, empty
    regtest blocks) is read rather than matched when that costs less for a big wallet
    (``read_instead``). Running averages."""

    __slots__ = ("filter_s", "block_s", "hit", "direct", "cheapest")

    def __init__(self) -> None:
        self.filter_s: float | None = None  # seconds per filter match
        self.block_s: float | None = None  # seconds per block fetched and applied
        self.hit: float | None = None  # share of blocks that touched the scope
        self.direct = False  # reading blocks without their filters now
        # The cheapest block applied whose filter size is known: (seconds, elements).
        # A minimum, not an average: the first reads pay for a new connection.
        self.cheapest: tuple[float, int] | None = None

    def filtered(self, count: int, seconds: float) -> None:
        self.filter_s = _average(self.filter_s, seconds / max(1, count))

    def applied(self, seconds: float, touched: bool, elements: int | None = None,
                small: bool = False) -> None:
        """A block fetched and applied; ``small``: read for its size, not because its
        filter matched (it stays out of the average that decides filters or none)."""
        if not small:
            self.block_s = _average(self.block_s, seconds)
        self.hit = _average(self.hit, float(touched))
        if elements is not None and (self.cheapest is None or seconds < self.cheapest[0]):
            self.cheapest = (seconds, elements)

    def probing(self) -> bool:
        """Whether to read one small block per batch: until one cost less than a match
        (the first read also opens a connection; one slow sample decides nothing)."""
        return self.cheapest is None or self.filter_s is None \
            or self.cheapest[0] >= self.filter_s

    def read_instead(self, elements: int) -> bool:
        """Whether a block whose filter has ``elements`` costs less read than matched.

        A block's cost: the cheapest block's, scaled up by elements (its fixed cost,
        a round trip and a write, scaled too: an overestimate that errs towards
        matching). Per block: filter + hit * block (matching) against block (reading)."""
        if self.filter_s is None or self.cheapest is None:
            return False
        seconds, least = self.cheapest
        block = seconds * max(1.0, (elements + 1) / (least + 1))
        return self.filter_s > (1.0 - (self.hit or 0.0)) * block

    def ruled_out(self) -> None:
        self.hit = _average(self.hit, 0.0)

    def known(self) -> bool:
        return self.filter_s is not None and self.block_s is not None

    def filters_cost_more(self) -> bool:
        if self.filter_s is None or self.block_s is None or self.hit is None:
            return False
        # Per block: filter + hit * block (filters) against block (none).
        return self.filter_s > (1.0 - self.hit) * self.block_s


_WEIGHT = 0.05  # of the newest sample in the running averages (~the last 20 blocks)


def _average(old: float | None, new: float) -> float:
    return new if old is None else old + (new - old) * _WEIGHT


class _Prefetch:
    """The matching blocks of a batch, fetched (REST, else RPC batches: a round trip per
    block cost more than matching it) by a task of its own while earlier ones are
    applied: bitcoind reads them on the other core meanwhile. At most
    ``_PREFETCH_BYTES`` are held ahead. Pruned ones (and blocks that only match once
    the gap grows) come back None, for ``_fetch``."""

    def __init__(self, blocks: BlockSource, wanted: list[bytes]) -> None:
        loop = asyncio.get_running_loop()
        self._ready: dict[bytes, asyncio.Future[bytes | None]] = {
            h: loop.create_future() for h in wanted}
        self._held = 0
        self._room = asyncio.Event()
        self._task = loop.create_task(self._run(blocks, list(wanted)))

    async def _run(self, blocks: BlockSource, wanted: list[bytes]) -> None:
        try:
            start = 0
            while start < len(wanted):
                while self._held > _PREFETCH_BYTES:
                    self._room.clear()
                    await self._room.wait()
                # REST: one block per request, each handed over as it comes.
                chunk = wanted[start:start + (1 if blocks.rest else _PREFETCH)]
                start += len(chunk)
                for h, raw in zip(chunk, await blocks.many(chunk), strict=True):
                    self._held += len(raw or b"")
                    self._resolve(h, raw)
        except NodeError:
            pass  # bitcoind away: the caller's own fetch says so
        finally:
            for h in list(self._ready):
                self._resolve(h, None)

    def _resolve(self, block_hash: bytes, raw: bytes | None) -> None:
        fut = self._ready.get(block_hash)
        if fut is not None and not fut.done():
            fut.set_result(raw)

    async def take(self, block_hash: bytes) -> bytes | None:
        fut = self._ready.get(block_hash)
        if fut is None:
            return None
        raw = await fut
        del self._ready[block_hash]
        self._held -= len(raw or b"")
        self._room.set()
        return raw

    def close(self) -> None:
        self._task.cancel()


class _Matched(list[bytes]):
    """Block hashes whose filter matched ``query`` (the gap may grow afterwards)."""

    def __init__(self, query: ScriptSet | None) -> None:
        super().__init__()
        self.query = query
        self.small: set[bytes] = set()  # read for their size, their filters not matched


@dataclass
class _Scope:
    """What one backfill pass covers: a whole wallet (``job_key`` None), or a job: a range
    of a live wallet's scripts that a client asked for beyond the gap. The job itself is
    looked up in the current wallet object each time (a reorg reloads wallets)."""

    wid: bytes
    job_key: tuple[int, int] | None  # (branch, start index)
    #: the scope's outputs: outpoint -> (scripthash, value), kept as blocks are applied
    outputs: dict[bytes, tuple[bytes, int]] = field(default_factory=dict)
    #: the txids of ``outputs`` (the block screen compares spent txids with them)
    funded: set[bytes] = field(default_factory=set)
    _set: tuple[tuple[int, int], frozenset[bytes]] | None = None
    _query: ScriptSet | None = None
    _query_prev: ScriptSet | None = None

    @property
    def key(self) -> bytes:
        if self.job_key is None:
            return self.wid
        return Indexer.job_key(self.wid, *self.job_key)

    def job(self, wallet: Wallet) -> dict[str, int] | None:
        for job in wallet.jobs:
            if (job["branch"], job["start"]) == self.job_key:
                return job
        return None

    def height(self, wallet: Wallet) -> int:
        if self.job_key is None:
            return wallet.backfill_height
        job = self.job(wallet)
        return job["height"] if job is not None else 1 << 31  # finished or gone

    def set_height(self, wallet: Wallet, height: int) -> None:
        if self.job_key is None:
            wallet.backfill_height = height
        elif (job := self.job(wallet)) is not None:
            job["height"] = height

    def version(self, idx: Indexer) -> tuple[int, int]:
        """Changes whenever the scope's scripts do (the gap grew, the job was extended)."""
        wallet = idx.wallets.get(self.wid)
        job = None if wallet is None or self.job_key is None else self.job(wallet)
        return len(idx.scripts.of_wallet(self.wid)), job["end"] if job is not None else -1

    def script_set(self, idx: Indexer) -> frozenset[bytes]:
        version = self.version(idx)
        if self._set is None or self._set[0] != version:
            self._set = (version, frozenset(self.scripts(idx)))
            self._query = None
        return self._set[1]

    def query(self, idx: Indexer) -> ScriptSet:
        """The scope's scripts prepared for filter matching, rebuilt only when they change."""
        scripts = self.script_set(idx)
        if self._query is None:
            # The gap moves a few scripts per matched block: grow the last query rather
            # than pack every script again.
            old = self._query_prev
            self._query = ScriptSet(scripts) if old is None else old.updated(scripts)
            self._query_prev = self._query
        return self._query

    def scripts(self, idx: Indexer) -> list[bytes]:
        wallet = idx.wallets.get(self.wid)
        if wallet is None:
            return []
        if self.job_key is None:
            return list(idx.scripts.of_wallet(self.wid).values())
        job = self.job(wallet)
        if job is None:
            return []
        return idx.scripts.in_range(self.wid, job["branch"], job["start"], job["end"])

    async def load_outputs(self, idx: Indexer, pacer: Pacer) -> None:
        """The scope's outputs already indexed (a resumed scan), for spends to find them
        in memory instead of one LevelDB read per input of every matched block."""
        self.outputs.clear()
        self.funded.clear()
        for script in self.script_set(idx):
            sh = idx.scripts.hashes[script]
            for rec in idx.store.outputs(sh):
                self.outputs[outpoint(rec.txid, rec.vout)] = (sh, rec.value)
                self.funded.add(rec.txid)
            await pacer.tick()


async def screen_aside(raw: bytes, scripts: Container[bytes],
                       funded: Container[bytes]) -> ScreenedBlock:
    """``screen_block``, in a worker thread for a big block (as ``parse_block_aside``)."""
    if len(raw) < ASIDE_BYTES:
        return screen_block(raw, scripts, funded)
    return await asyncio.to_thread(screen_block, raw, scripts, funded)


def _index_in(found_desc: str, branch_desc: str) -> int | None:
    """Which index of ``branch_desc`` a ``scantxoutset`` match is.

    scantxoutset reports the derived key with its full origin, e.g.
    ``wpkh([fp/84h/1h/0h/0/5]02ab...)``: the last two path steps are the branch's own
    step (``/0/*`` -> 0) and the index (5). The script type must match too.
    """
    found = _ORIGIN_TAIL.search(found_desc)
    own = _BRANCH_STEP.search(branch_desc.split("#")[0])
    if found is None or own is None:
        return None
    if found_desc.split("(")[0] != branch_desc.split("(")[0]:
        return None
    if found.group(1).rstrip("h'") != own.group(1):
        return None
    return int(found.group(2))


_ORIGIN_TAIL = re.compile(r"/(\d+[h']?)/(\d+)\]")
_BRANCH_STEP = re.compile(r"/(\d+)/\*")

"""The index itself: wallets, watched scripts and what blocks and the mempool did to them.

``Indexer`` owns the LevelDB store and the in-memory views derived from it (scripts,
unspent outpoints, the wallets' mempool slice). Only the chain task and the backfill
task write, and each write happens without an ``await`` between computing and
committing it, so the event loop keeps every step atomic.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..chain import Block, MerkleTree, Tx, script_to_scripthash
from ..chain.utxo import Utxo
from ..durability import WriteFailed
from ..node.pace import Pacer
from .adhoc import AdhocEntry, AdhocWatches
from .matcher import TxMatch, iter_matches, outpoint
from .mempool import Mempool
from .schema import (
    conf_key,
    history_key,
    output_key,
    pack_height,
    script_output_key,
    spent_key,
    tx_key,
    wallet_key,
    wallet_script_key,
)
from .screen import ScreenedBlock
from .store import IndexStore, UndoBatch
from .wallets import (
    Branch,
    DescriptorRPC,
    ScriptRef,
    Wallet,
    derive_scripts,
    normalize_descriptors,
    wallet_id_for,
)

__all__ = ["Indexer", "WalletScripts"]

log = logging.getLogger("indexer.index")

_U64 = struct.Struct(">Q")
_DERIVE_AHEAD = 200  # scripts per deriveaddresses call while a backfill moves the gap

ChangeListener = Callable[[set[bytes]], Awaitable[None]]


@dataclass
class WalletScripts:
    """Every derived script of every wallet, and which ones are matched live.

    Kept with per-wallet and per-script views so that a wallet's scripts, a script's
    hash and a job's range are looked up, never searched for (wallets reach 10,000+
    scripts; a scan of every script per script would be quadratic)."""

    refs: dict[bytes, list[ScriptRef]]  # script -> where it was derived
    by_scripthash: dict[bytes, bytes]  # scripthash -> script
    live: set[bytes]  # scripts of wallets whose history is complete (state "live")
    #: script -> its scripthash (hashed once)
    hashes: dict[bytes, bytes] = field(default_factory=dict)
    #: wallet id -> (branch, index) -> script
    by_wallet: dict[bytes, dict[tuple[int, int], bytes]] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> WalletScripts:
        return cls({}, {}, set())

    def add(self, script: bytes, ref: ScriptRef, live: bool) -> None:
        refs = self.refs.setdefault(script, [])
        if ref not in refs:
            refs.append(ref)
        sh = self.hashes.get(script)
        if sh is None:
            sh = self.hashes[script] = script_to_scripthash(script)
        self.by_scripthash[sh] = script
        self.by_wallet.setdefault(ref.wallet_id, {})[(ref.branch, ref.index)] = script
        if live:
            self.live.add(script)

    def drop_wallet(self, wallet_id: bytes) -> None:
        """Forget a wallet's refs; a script no other wallet has leaves every view."""
        for script in self.by_wallet.pop(wallet_id, {}).values():
            refs = [r for r in self.refs.get(script, ()) if r.wallet_id != wallet_id]
            if refs:
                self.refs[script] = refs
                continue
            self.refs.pop(script, None)
            self.live.discard(script)
            sh = self.hashes.pop(script, None)
            if sh is not None:
                self.by_scripthash.pop(sh, None)

    def of_wallet(self, wallet_id: bytes) -> dict[tuple[int, int], bytes]:
        return self.by_wallet.get(wallet_id, {})

    def in_range(self, wallet_id: bytes, branch: int, start: int, end: int) -> list[bytes]:
        """Scripts ``start..end-1`` of one branch (those derived)."""
        mine = self.of_wallet(wallet_id)
        return [s for i in range(start, end) if (s := mine.get((branch, i))) is not None]


class Indexer:
    def __init__(self, store: IndexStore, rpc: DescriptorRPC, network: str) -> None:
        self.store = store
        self.rpc = rpc
        self.network = network
        self.wallets: dict[bytes, Wallet] = {}
        self.scripts = WalletScripts.empty()
        #: confirmed, unspent outputs of live wallets: outpoint -> (scripthash, value)
        self.unspent: dict[bytes, tuple[bytes, int]] = {}
        self.mempool = Mempool()
        #: scantxoutset results for wallets still backfilling: scripthash -> UTXOs
        self.provisional: dict[bytes, list[Utxo]] = {}
        #: the next ``gap`` scripts past each ranged branch, not watched yet:
        #: scripthash -> (ref, script). A client asking for one extends the gap.
        self.lookahead: dict[bytes, tuple[ScriptRef, bytes]] = {}
        #: scripts watched because a client subscribed to them (see adhoc.py)
        self.adhoc = AdhocWatches(store.adhoc_records())
        #: set when a gap job's history is complete, by job key (see job_key)
        self._job_done: dict[bytes, asyncio.Event] = {}
        #: wallets whose backfill or gap jobs are paused (bitcoind away, a pruned block no
        #: peer serves, a full disk): their gap scripts are answered without waiting
        self.stalled: set[bytes] = set()
        #: wallets added whose scripts are still being registered (the backfill waits)
        self.registering: set[bytes] = set()
        #: scripts derived ahead of need: descriptor -> index -> script (see _derive)
        self._ahead: dict[str, dict[int, bytes]] = {}
        #: how many times the views were rebuilt from the store (see match_with_gap)
        self.loads = 0

    # --- loading --------------------------------------------------------------------------
    def load(self) -> None:
        """(Re)build the in-memory views from the store (start-up, after a reorg or a
        failed write)."""
        self.loads += 1
        self.wallets = {wid: Wallet.from_record(wid, rec)
                        for wid, rec in self.store.wallet_records().items()}
        self.scripts = WalletScripts.empty()
        for wid, wallet in self.wallets.items():
            for branch, index, script in self.store.wallet_scripts(wid):
                live = wallet.state == "live" and not wallet.pending(branch, index)
                self.scripts.add(script, ScriptRef(wid, branch, index), live)
        self.adhoc.entries = self.store.adhoc_records()
        live_sh = {self.scripts.hashes[s] for s in self.scripts.live}
        self.unspent = {op: (sh, value) for op, sh, value in self._unspent_rows()
                        if sh in live_sh or sh in self.adhoc}

    async def restore(self) -> None:
        """A write failed: memory goes back to what the disk holds. Matching a block or
        a transaction moves wallets' ``used``/``derived`` and registers scripts before
        the write; reloading from the store (as a reorg does) undoes all of it at once,
        and the lookahead past each gap follows the restored ``derived``."""
        self.load()
        await self.refresh_lookahead()

    async def commit_backfill(self, batch: UndoBatch) -> None:
        """``store.commit_backfill``, with memory restored if the write fails."""
        try:
            self.store.commit_backfill(batch)
        except WriteFailed:
            await self.restore()
            raise

    def _unspent_rows(self) -> list[tuple[bytes, bytes, int]]:
        rows = []
        for op, sh in self.store.unspent_outpoints():
            rec = self.store.output(op[:32], int.from_bytes(op[32:], "big"))
            if rec is not None:
                rows.append((op, sh, rec.value))
        return rows

    async def make_live(self, scripts: list[bytes], pacer: Pacer) -> None:
        """Scripts whose history is now complete (a wallet or a job reached the tip):
        match them live and load their unspent outputs. Only these scripts are touched,
        so the cost is theirs, not the box's. The caller holds the chain lock, so no
        block lands between the flip and the loaded outputs."""
        shs = []
        for script in scripts:
            self.scripts.live.add(script)
            shs.append(self.scripts.hashes[script])
        for sh in shs:
            self.provisional.pop(sh, None)
            for rec in self.store.outputs(sh):
                if self.store.spender(rec.txid, rec.vout) is None:
                    self.unspent[outpoint(rec.txid, rec.vout)] = (sh, rec.value)
            await pacer.tick()

    # --- gap jobs: scripts a client asked for past the gap ---------------------------------
    @staticmethod
    def job_key(wallet_id: bytes, branch: int, start: int) -> bytes:
        return wallet_id + bytes([branch]) + start.to_bytes(4, "big")

    def history_pending(self, scripthash: bytes) -> asyncio.Event | None:
        """The event set when this script's history is complete, if it is in a gap job
        (watched, but its past still being scanned); None if its history is complete."""
        script = self.scripts.by_scripthash.get(scripthash)
        if script is None or script in self.scripts.live:
            return None
        for ref in self.scripts.refs.get(script, ()):
            wallet = self.wallets.get(ref.wallet_id)
            if wallet is None or wallet.state != "live":
                continue  # a wallet still backfilling answers scantxoutset's view
            if ref.wallet_id in self.stalled:
                continue  # its jobs cannot progress now: answer what is known at once
            for job in wallet.jobs:
                if job["branch"] == ref.branch and job["start"] <= ref.index < job["end"]:
                    key = self.job_key(ref.wallet_id, ref.branch, job["start"])
                    return self._job_done.setdefault(key, asyncio.Event())
        return None

    def stall(self, wallet_id: bytes) -> None:
        """This wallet's jobs cannot progress for now: release whoever waits on them."""
        self.stalled.add(wallet_id)
        for key in [k for k in self._job_done if k.startswith(wallet_id)]:
            self._job_done.pop(key).set()

    def job_finished(self, key: bytes) -> None:
        event = self._job_done.pop(key, None)
        if event is not None:
            event.set()

    def tip(self) -> tuple[int, bytes] | None:
        return self.store.tip()

    def is_watched_scripthash(self, scripthash: bytes) -> bool:
        return scripthash in self.scripts.by_scripthash or scripthash in self.adhoc

    def live_scripts(self) -> set[bytes]:
        return self.scripts.live

    def watched_script(self, script: bytes) -> bool:
        """Whether blocks and the mempool must record this output script: a live
        wallet's, or (hashing it, since only the hash is known) an ad-hoc watch."""
        if script in self.scripts.live:
            return True
        return bool(self.adhoc.entries) and script_to_scripthash(script) in self.adhoc

    def watches_anything(self) -> bool:
        return bool(self.scripts.live) or bool(self.adhoc.entries)

    # --- ad-hoc watches (a client subscribed to a script no wallet derives) ---------------
    def watch_adhoc(self, scripthash: bytes, now: int,
                    subscribed: Callable[[bytes], bool]) -> bool:
        """Start watching ``scripthash``; True if it is a new watch. A wallet's script
        (even one still backfilling) is not ad-hoc; a known one just gets its time."""
        if scripthash in self.scripts.by_scripthash:
            return False
        try:
            if scripthash in self.adhoc:
                self._touch_adhoc(scripthash, now)
                return False
            if len(self.adhoc) >= self.adhoc.limit:
                victim = self.adhoc.victim(subscribed)
                if victim is None:
                    log.warning("ad-hoc watch refused: all %d are subscribed", len(self.adhoc))
                    return False
                self.forget_adhoc({victim})
            entry = AdhocEntry(now, now)
            self.store.put_adhoc(scripthash, entry)  # on disk first, then watched
        except WriteFailed as exc:
            # (A full disk: the client is answered from what is indexed, unwatched.)
            log.warning("ad-hoc watch not stored: %s", exc.text)
            return False
        self.adhoc.entries[scripthash] = entry
        log.info("watching ad-hoc script %s… (%d ad-hoc)", scripthash.hex()[:16],
                 len(self.adhoc))
        return True

    def forget_adhoc(self, scripthashes: set[bytes]) -> set[bytes]:
        """Stop watching and delete their index entries; returns those that were watched."""
        gone = {sh for sh in scripthashes if sh in self.adhoc}
        if not gone:
            return gone
        self.store.delete_adhoc(gone)
        for sh in gone:
            del self.adhoc.entries[sh]
            for entry in list(self.mempool.entries(sh)):
                self.mempool.remove(entry.txid)
        self.unspent = {op: v for op, v in self.unspent.items() if v[0] not in gone}
        log.info("forgot %d ad-hoc script(s) nobody subscribed to", len(gone))
        return gone

    def upkeep_adhoc(self, now: int, subscribed: Callable[[bytes], bool]) -> set[bytes]:
        """Refresh the time of subscribed ad-hoc watches, forget expired ones."""
        for sh in list(self.adhoc):
            if subscribed(sh):
                self._touch_adhoc(sh, now)
        return self.forget_adhoc(set(self.adhoc.expired(now, subscribed)))

    def _touch_adhoc(self, scripthash: bytes, now: int) -> None:
        """Refresh a watch's time; memory keeps the old one if the write fails."""
        entry = self.adhoc.entries[scripthash]
        last = entry.last
        if self.adhoc.touch(scripthash, now):
            try:
                self.store.put_adhoc(scripthash, entry)
            except WriteFailed:
                entry.last = last
                raise

    # --- derivation and the gap limit -----------------------------------------------------
    async def derive_wallet(self, wallet: Wallet) -> dict[tuple[int, int], bytes]:
        """Derive every branch up to ``used + 1 + gap``; returns the new scripts."""
        new: dict[tuple[int, int], bytes] = {}
        for bi, branch in enumerate(wallet.branches):
            want = wallet.wanted(bi)
            if want <= branch.derived:
                continue
            scripts = await self._derive(branch, branch.derived, want)
            for offset, script in enumerate(scripts):
                new[(bi, branch.derived + offset)] = script
            branch.derived = want
        return new

    async def _derive(self, branch: Branch, start: int, end: int) -> list[bytes]:
        """Scripts ``start..end-1`` of a branch. A backfill moves the gap a few scripts
        per block and the lookahead past it each time: bitcoind derives
        ``_DERIVE_AHEAD`` at once, kept here until the branch's watched range passes
        them, instead of an RPC and address decoding per move."""
        if not branch.ranged:
            return await derive_scripts(self.rpc, branch, start, end, self.network)
        have = self._ahead.setdefault(branch.descriptor, {})
        if len(have) > 2 * _DERIVE_AHEAD:
            # Below the watched range: never asked for again. Swept only now and then:
            # a sweep per call walked ~2,000 keys for each of a backfill's gap moves.
            for i in [i for i in have if i < start]:
                del have[i]
        missing = [i for i in range(start, end) if i not in have]
        if missing:
            lo = missing[0]
            hi = max(missing[-1] + 1, lo + _DERIVE_AHEAD)
            derived = await derive_scripts(self.rpc, branch, lo, hi, self.network)
            have.update(zip(range(lo, hi), derived, strict=True))
        return [have[i] for i in range(start, end)]

    def _register_scripts(self, wallet: Wallet, scripts: dict[tuple[int, int], bytes]) -> None:
        for (bi, index), script in scripts.items():
            live = wallet.state == "live" and not wallet.pending(bi, index)
            self.scripts.add(script, ScriptRef(wallet.wallet_id, bi, index), live)

    def _mark_used(self, matches: list[TxMatch], wallet_ids: set[bytes] | None) -> set[bytes]:
        """Raise each branch's ``used`` index; returns wallets needing more scripts."""
        grow: set[bytes] = set()
        for m in matches:
            for f in m.funding:
                for ref in self.scripts.refs.get(f.script, ()):
                    if wallet_ids is not None and ref.wallet_id not in wallet_ids:
                        continue
                    wallet = self.wallets[ref.wallet_id]
                    branch = wallet.branches[ref.branch]
                    if ref.index > branch.used:
                        branch.used = ref.index
                        if wallet.wanted(ref.branch) > branch.derived:
                            grow.add(ref.wallet_id)
        return grow

    async def match_with_gap(self, txs: list[Tx] | ScreenedBlock,
                             watched: Callable[[bytes], bool],
                             lookup: Callable[[bytes], tuple[bytes, int] | None],
                             wallet_ids: set[bytes] | None
                             ) -> tuple[list[TxMatch], dict[bytes, dict[tuple[int, int], bytes]]]:
        """Match txs; when they use scripts near the end of a gap, derive more and match
        again, so a payment to a just-derived script in the same block is not missed.
        A screened block is matched on the transactions its screen kept."""
        derived: dict[bytes, dict[tuple[int, int], bytes]] = {}
        pacer = Pacer()
        paid: set[bytes] | None = None  # every output script of txs, once needed
        screened = txs if isinstance(txs, ScreenedBlock) else None
        loads = self.loads
        while True:
            if self.loads != loads:
                # Another task's failed write reloaded the views while this one awaited:
                # what it derived went with the old ones. Match again on the new ones.
                loads, derived = self.loads, {}
                if screened is not None:
                    screened.rescreen()
            matches = []
            kept, positions = (screened.txs, screened.positions) if screened is not None \
                else (txs, None)
            assert isinstance(kept, list)
            for m in iter_matches(kept, watched, lookup, positions):
                if m is not None:
                    matches.append(m)
                await pacer.tick()
            grow = self._mark_used(matches, wallet_ids)
            new_scripts: set[bytes] = set()
            for wid in grow:
                wallet = self.wallets[wid]
                new = await self.derive_wallet(wallet)
                self._register_scripts(wallet, new)
                derived.setdefault(wid, {}).update(new)
                new_scripts.update(new.values())
            if new_scripts:
                if screened is not None:
                    if screened.pays_any(new_scripts):
                        screened.rescreen()
                        continue  # a just-derived script is paid here: match again
                else:
                    assert isinstance(txs, list)
                    if paid is None:
                        paid = {o.script_pubkey for tx in txs for o in tx.outputs}
                    if not paid.isdisjoint(new_scripts):
                        continue
            # (A script no output pays cannot be spent here either: nothing to redo.)
            if derived:
                await self.refresh_lookahead(set(derived))
            if self.loads != loads:
                continue
            return matches, derived

    # --- writing a block's effects --------------------------------------------------------
    def write_matches(self, batch: UndoBatch, height: int, txids: list[bytes] | MerkleTree,
                      matches: list[TxMatch]) -> set[bytes]:
        """Put the history, outputs, spends, raw txs and merkle branches of ``matches``
        (``txids``: the block's, or their tree when built already)."""
        touched: set[bytes] = set()
        if not matches:
            return touched
        tree = txids if isinstance(txids, MerkleTree) else MerkleTree(txids)
        for m in matches:
            txid = m.tx.txid
            batch.put(tx_key(txid), m.tx.raw)
            batch.put(conf_key(txid), pack_height(height) + pack_height(m.pos)
                      + b"".join(tree.branch(m.pos)))
            for sh in m.scripthashes:
                batch.put(history_key(sh, height, m.pos), txid)
                touched.add(sh)
            for f in m.funding:
                batch.put(output_key(txid, f.vout),
                          f.scripthash + _U64.pack(f.value) + pack_height(height))
                batch.put(script_output_key(f.scripthash, height, txid, f.vout), b"")
            for s in m.spending:
                batch.put(spent_key(s.prev_txid, s.prev_vout), txid + pack_height(height))
        return touched

    def write_wallets(self, batch: UndoBatch, wallet_ids: set[bytes],
                      derived: dict[bytes, dict[tuple[int, int], bytes]]) -> None:
        import json

        for wid in wallet_ids | set(derived):
            wallet = self.wallets.get(wid)
            if wallet is None:
                continue
            batch.put(wallet_key(wid), json.dumps(wallet.to_record(), sort_keys=True).encode())
            for (bi, index), script in derived.get(wid, {}).items():
                batch.put(wallet_script_key(wid, bi, index), script)

    def _wallets_of(self, matches: list[TxMatch]) -> set[bytes]:
        out: set[bytes] = set()
        for m in matches:
            for f in m.funding:
                out.update(ref.wallet_id for ref in self.scripts.refs.get(f.script, ()))
        return out

    async def connect_block(self, block: Block, height: int) -> set[bytes]:
        """Apply a block on top of the tip (caller checked the parent); returns the
        scripthashes whose history changed."""
        # Paused on a full disk, each retry would match the block and reload every view
        # after the refused write: refused before any of that instead.
        self.store.ensure_writable(f"block {height}")
        txids = [tx.txid for tx in block.txs]
        matches, derived = await self.match_with_gap(
            block.txs, self.watched_script, self.unspent.get, None)
        # Recheck the tip after the awaits above: the caller's check must still hold.
        batch = self.store.begin_block(height)
        touched = self.write_matches(batch, height, txids, matches)
        self.write_wallets(batch, self._wallets_of(matches), derived)
        try:
            self.store.commit_block(batch, block.header.raw, block.header.hash)
        except WriteFailed:
            await self.restore()  # unspent, mempool and tip were not touched yet
            raise
        for m in matches:
            for f in m.funding:
                self.unspent[outpoint(m.tx.txid, f.vout)] = (f.scripthash, f.value)
            for s in m.spending:
                self.unspent.pop(outpoint(s.prev_txid, s.prev_vout), None)
        for tx in block.txs:
            if tx.txid in self.mempool:
                touched |= self.mempool.remove(tx.txid)
        return touched

    def connect_header_only(self, height: int, header: bytes, block_hash: bytes) -> None:
        """A block that provably touches no watched script (no live wallet, or its
        BIP158 filter matched nothing): keep the header, tip and an (empty) undo record.
        (Nothing in memory changes: a failed write leaves nothing to put back.)"""
        self.store.commit_block(self.store.begin_block(height), header, block_hash)

    def rollback_tip(self) -> set[bytes]:
        # A failed write raises before memory is touched: the block stays, as on disk.
        height, touched, removed = self.store.rollback_tip()
        log.info("rolled back block %d (%d wallet transactions)", height, len(removed))
        self.load()
        return touched

    # --- the gap, grown on demand ----------------------------------------------------------
    async def refresh_lookahead(self, wallet_ids: set[bytes] | None = None) -> None:
        """Derive the scripts just past each branch's watched range: of every wallet, or
        only of ``wallet_ids`` (whose gap moved; the others' lookahead stands)."""
        if wallet_ids is None:
            ahead: dict[bytes, tuple[ScriptRef, bytes]] = {}
        else:
            ahead = {sh: e for sh, e in self.lookahead.items()
                     if e[0].wallet_id not in wallet_ids}
        for wid, wallet in self.wallets.items():
            if wallet_ids is not None and wid not in wallet_ids:
                continue
            for bi, branch in enumerate(wallet.branches):
                if not branch.ranged:
                    continue
                scripts = await self._derive(branch, branch.derived,
                                             branch.derived + wallet.gap_of(bi))
                for offset, script in enumerate(scripts):
                    ref = ScriptRef(wid, bi, branch.derived + offset)
                    ahead[script_to_scripthash(script)] = (ref, script)
        self.lookahead = ahead

    async def extend_on_query(self, scripthash: bytes) -> bool:
        """A client asked for a script just past a branch's gap (its own gap limit is
        larger than ours): watch up to it, and queue a backfill job for the new scripts.
        Returns whether a job was queued."""
        entry = self.lookahead.get(scripthash)
        if entry is None:
            return False
        ref, _script = entry
        wallet = self.wallets.get(ref.wallet_id)
        if wallet is None:
            return False
        branch = wallet.branches[ref.branch]
        if ref.index < branch.derived:
            return False  # already watched (a concurrent query got here first)
        start = branch.derived
        new = {(ref.branch, i): s for r, s in self.lookahead.values()
               if r.wallet_id == ref.wallet_id and r.branch == ref.branch
               and start <= (i := r.index) <= ref.index}
        branch.derived = ref.index + 1
        if wallet.state == "live":
            self._queue_job(wallet, ref.branch, start, ref.index + 1)
        self._register_scripts(wallet, new)
        try:
            self.store.put_wallet(wallet.wallet_id, wallet.to_record(), new)
        except WriteFailed as exc:
            # A full disk: not watched further; the client gets what is indexed.
            log.warning("wallet %s: gap not extended: %s", wallet.id_hex, exc.text)
            await self.restore()
            return False
        log.info("wallet %s: a client asked past the gap; watching branch %d up to %d",
                 wallet.id_hex, ref.branch, ref.index)
        await self.refresh_lookahead({wallet.wallet_id})
        return wallet.state == "live"

    @staticmethod
    def _queue_job(wallet: Wallet, branch: int, start: int, end: int) -> None:
        """Backfill scripts ``start..end-1`` of a live wallet's branch from its birthday.
        A client scanning with a large gap asks script after script: a job not started
        yet grows instead of a new job (and a new scan) per script."""
        queued = next((j for j in wallet.jobs if j["branch"] == branch and j["end"] == start
                       and j["height"] == wallet.birthday - 1), None)
        if queued is not None:
            queued["end"] = end
        else:
            wallet.jobs.append({"branch": branch, "start": start, "end": end,
                                "height": wallet.birthday - 1})

    async def raise_used(self, wallet_id: bytes, used: dict[int, int]) -> int:
        """Indices found holding coins (``scantxoutset``) past what a live wallet's scan
        saw, i.e. paid out of order beyond the gap: mark them used, watch the gap past
        them, and queue a job for the new scripts' history. Returns how many scripts
        were added. Caller holds the chain lock (no block lands in between)."""
        added = 0
        while True:
            wallet = self.wallets.get(wallet_id)
            if wallet is None or wallet.state != "live":
                return added
            todo = [(bi, index) for bi, index in sorted(used.items())
                    if bi < len(wallet.branches) and index > wallet.branches[bi].used]
            if not todo:
                self.store.put_wallet(wallet_id, wallet.to_record())
                return added
            bi, index = todo[0]
            branch = wallet.branches[bi]
            start, end = branch.derived, max(branch.derived, index + 1 + wallet.gap_of(bi))
            scripts = await self._derive(branch, start, end) if end > start else []
            if self.wallets.get(wallet_id) is not wallet or branch.derived != start:
                continue  # reloaded, or a client's query moved the gap meanwhile: again
            branch.used = index
            branch.derived = end
            new = {(bi, start + i): s for i, s in enumerate(scripts)}
            if new:
                self._queue_job(wallet, bi, start, end)
                self._register_scripts(wallet, new)
                added += len(new)
                log.info("wallet %s: coins at index %d of branch %d, past the gap: "
                         "watching up to %d", wallet.id_hex, index, bi, end - 1)
            self.store.put_wallet(wallet_id, wallet.to_record(), new)
            await self.refresh_lookahead({wallet_id})

    # --- wallet registration -------------------------------------------------------------
    async def add_wallet(self, items: list[str], *, birthday: int | None, gap: int,
                         change_gap: int, label: str = "") -> tuple[Wallet, bool]:
        """Register a wallet (idempotent); returns it and whether it was new."""
        branches = await normalize_descriptors(self.rpc, items, self.network == "mainnet")
        wid = wallet_id_for(branches)
        if wid in self.wallets:
            return self.wallets[wid], False
        tip = self.tip()
        tip_height = tip[0] if tip else -1
        if birthday is None:
            birthday = _default_birthday(self.network, [b.descriptor for b in branches])
        birthday = max(0, min(birthday, tip_height + 1))
        wallet = Wallet(wid, branches, gap, birthday, label=label, change_gap=change_gap)
        wallet.backfill_height = birthday - 1
        scripts = await self.derive_wallet(wallet)
        if wid in self.wallets:  # added by another request meanwhile
            return self.wallets[wid], False
        # On disk first: a failed write (DiskFull) leaves memory as it was.
        await self.store.put_wallet_aside(wid, wallet.to_record(), scripts)
        if wid in self.wallets:
            return self.wallets[wid], False
        self.wallets[wid] = wallet
        # Not live yet (state "new"): nothing matches its scripts, and the backfill
        # leaves it alone while ``registering``, so registering 10,000 scripts (~20 ms
        # here) may yield as it goes.
        self.registering.add(wid)
        try:
            pacer = Pacer()
            for (bi, index), script in scripts.items():
                self.scripts.add(script, ScriptRef(wid, bi, index), False)
                await pacer.tick()
        finally:
            self.registering.discard(wid)
        log.info("wallet %s registered: %d branches, birthday %d", wallet.id_hex,
                 len(branches), birthday)
        return wallet, True


    async def remove_wallet(self, wallet_id: bytes) -> set[bytes]:
        """Forget a wallet and its index; returns the scripthashes that lost their history.

        The event loop is served meanwhile (a 10,000-script wallet held it ~60 ms): the
        caller holds the chain lock, and the backfill leaves a wallet in ``registering``
        alone. Memory follows once the disk has it, in one step and for this wallet only
        (a reload of every wallet cost as much again)."""
        wallet = self.wallets.get(wallet_id)
        if wallet is None:
            raise KeyError(wallet_id.hex())
        pacer = Pacer()
        self.registering.add(wallet_id)
        try:
            shs: set[bytes] = set()
            for script in list(self.scripts.of_wallet(wallet_id).values()):
                if all(r.wallet_id == wallet_id for r in self.scripts.refs.get(script, ())):
                    shs.add(self.scripts.hashes[script])
                await pacer.tick()
            await self.store.delete_wallet(wallet_id, shs, pacer)
        finally:
            self.registering.discard(wallet_id)
        self.wallets.pop(wallet_id, None)
        self.scripts.drop_wallet(wallet_id)
        self.unspent = {op: v for op, v in self.unspent.items() if v[0] not in shs}
        for sh in shs:
            self.provisional.pop(sh, None)
            for entry in list(self.mempool.entries(sh)):
                self.mempool.remove(entry.txid)
        for branch in wallet.branches:
            self._ahead.pop(branch.descriptor, None)
        self.lookahead = {sh: e for sh, e in self.lookahead.items()
                          if e[0].wallet_id != wallet_id}
        return shs


def _default_birthday(network: str, descriptors: list[str]) -> int:
    """Without a birthday, start where the wallet's script type became possible."""
    if network != "mainnet":
        return 0
    if all(d.startswith("tr(") for d in descriptors):
        return 709_632  # taproot activation
    if all(d.startswith(("wpkh(", "wsh(", "sh(wpkh(", "sh(wsh(")) for d in descriptors):
        return 481_824  # segwit activation
    return 0

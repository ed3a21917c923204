"""What the tower does with each transaction and block bitcoind announces.

Every transaction (from the mempool or a block) is a candidate breach: its txid's
locator is looked up (one LevelDB ``get``); on a hit the stored Electrum sweeps that
spend its outputs are broadcast as they are, and each TEOS appointment waiting on the
locator is decrypted with the full txid and broadcast. The response is written down
first (a *tracker*), so a crash between seeing and answering is retried on restart,
and then followed block by block: rebroadcast while unconfirmed, and again if a reorg
takes the breach or the penalty out of the chain.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..chain import Block, ChainParseError, Tx, hash_to_hex_str, parse_tx
from .crypto import decrypt_blob, locator_of
from .store import TowerStore, outpoint

__all__ = ["BroadcastResult", "Watcher"]

log = logging.getLogger("tower.watcher")


@dataclass(frozen=True)
class BroadcastResult:
    ok: bool
    error: str = ""


Broadcast = Callable[[bytes], Awaitable[BroadcastResult]]
Notify = Callable[[str, str], None]
#: (txid, block hash or None for the mempool) -> the raw transaction, if still available
FetchTx = Callable[[bytes, bytes | None], Awaitable[bytes | None]]

# Txids seen lately (mempool, last blocks), so an appointment or sweep that arrives after
# its breach was already broadcast is answered at once (rust-teos keeps 6 blocks' worth).
# ~100 bytes each in CPython: 40,000 is ~4 MB, about 10 full blocks or a busy mempool.
_RECENT_MAX = 40_000

# bitcoind's answers that mean "it is in the mempool or chain already": success.
_ALREADY = ("already in", "txn-already-known", "txn-already-in-mempool", "already known")


def _penalty_entry(source: str, penalty: Tx) -> dict[str, Any]:
    """A penalty in a tracker: not yet sent, not confirmed."""
    return {"txid": hash_to_hex_str(penalty.txid), "raw": penalty.raw.hex(), "source": source,
            "height": None, "attempts": 0, "error": "", "sent": False}


class Watcher:
    def __init__(self, store: TowerStore, broadcast: Broadcast, notify: Notify, *,
                 finality_depth: int = 100, fetch_tx: FetchTx | None = None) -> None:
        self.store = store
        self.broadcast = broadcast
        self.notify = notify
        self.fetch_tx = fetch_tx
        self.recent: OrderedDict[bytes, tuple[bytes, bytes | None]] = OrderedDict()
        self.finality_depth = finality_depth
        tip = store.tip()
        self.height = tip[0] if tip else 0
        self.stats = {"txs_checked": 0, "breaches": 0, "penalties_broadcast": 0,
                      "penalties_confirmed": 0, "undecryptable": 0, "broadcast_errors": 0}
        #: seconds from a breach reaching the watcher to its penalties' broadcast calls
        self.last_response_s: float | None = None

    # --- transactions ------------------------------------------------------------------
    async def on_transaction(self, tx: Tx, *, height: int | None = None, remember: bool = True) -> int:
        """Check one transaction; returns how many penalties it triggered."""
        self.stats["txs_checked"] += 1
        if height is None and remember:
            self._remember(tx.txid, None)
        if not self.store.has_locator(locator_of(tx.txid)):
            return 0
        if self.store.tracker(tx.txid) is not None:
            return 0  # already answered (seen in the mempool, now in a block)
        started = time.monotonic()
        penalties = self._penalties_for(tx)
        if not penalties:
            return 0
        self.stats["breaches"] += 1
        tracker = {
            "breach_txid": hash_to_hex_str(tx.txid), "breach_raw": tx.raw.hex(),
            "breach_height": height, "seen": time.time(), "final": False,
            "penalties": [_penalty_entry(src, p) for src, p in penalties],
        }
        self.store.put_tracker(tx.txid, tracker)
        log.warning("breach: %s spends a revoked state; broadcasting %d penalt%s",
                    hash_to_hex_str(tx.txid), len(penalties), "y" if len(penalties) == 1 else "ies")
        self.notify("breach", hash_to_hex_str(tx.txid))
        await self._send_penalties(tx.txid, tracker)
        self.last_response_s = time.monotonic() - started
        return len(penalties)

    def _penalties_for(self, tx: Tx) -> list[tuple[str, Tx]]:
        out: list[tuple[str, Tx]] = []
        seen: set[bytes] = set()
        for sweep in self.store.sweeps_spending(tx.txid):
            try:
                penalty = parse_tx(sweep.raw_tx)
            except ChainParseError:
                continue  # validated when stored; never expected
            if penalty.txid not in seen:
                seen.add(penalty.txid)
                out.append((f"electrum:{hash_to_hex_str(sweep.funding[:32])}:"
                            f"{int.from_bytes(sweep.funding[32:], 'big')}", penalty))
        for appointment in self.store.appointments_at(locator_of(tx.txid)):
            raw = decrypt_blob(appointment.blob, tx.txid)
            maybe = parse_raw_tx(raw) if raw is not None else None
            if maybe is None:
                # A blob that does not open with this txid is garbage (16-byte locators
                # do not collide by chance): drop it so it is not retried every time.
                self.stats["undecryptable"] += 1
                log.info("appointment %s of user %s does not decrypt with %s: dropped",
                         appointment.locator.hex(), appointment.user.hex(), hash_to_hex_str(tx.txid))
                self.store.delete_appointment(appointment.locator, appointment.user)
                continue
            if maybe.txid not in seen:
                seen.add(maybe.txid)
                out.append((f"teos:{appointment.user.hex()}", maybe))
        return out

    async def _send_penalties(self, breach_txid: bytes, tracker: dict[str, Any]) -> None:
        for penalty in tracker["penalties"]:
            if penalty["height"] is not None:
                continue
            result = await self.broadcast(bytes.fromhex(penalty["raw"]))
            penalty["attempts"] += 1
            if result.ok or any(s in result.error for s in _ALREADY):
                penalty["error"] = ""
                if penalty.get("sent"):
                    log.debug("penalty %s still unconfirmed: sent again", penalty["txid"])
                    continue
                penalty["sent"] = True
                self.stats["penalties_broadcast"] += 1
                log.warning("penalty %s broadcast (attempt %d)", penalty["txid"], penalty["attempts"])
                self.notify("penalty_broadcast", penalty["txid"])
            else:
                penalty["error"] = result.error[:200]
                self.stats["broadcast_errors"] += 1
                log.error("penalty %s not accepted (attempt %d): %s; retrying every block",
                          penalty["txid"], penalty["attempts"], result.error)
                self.notify("penalty_failed", f"{penalty['txid']}: {result.error[:80]}")
        self.store.put_tracker(breach_txid, tracker)

    def _remember(self, txid: bytes, block_hash: bytes | None) -> None:
        locator = locator_of(txid)
        self.recent[locator] = (txid, block_hash)
        self.recent.move_to_end(locator)
        if len(self.recent) > _RECENT_MAX:
            self.recent.popitem(last=False)

    async def check_recent(self, locator: bytes) -> int:
        """Something new waits on ``locator``: if that txid was already seen (mempool or
        a recent block), answer now instead of never. Returns penalties triggered."""
        seen = self.recent.get(locator)
        if seen is None or self.fetch_tx is None:
            return 0
        txid, block_hash = seen
        raw = await self.fetch_tx(txid, block_hash)
        tx = parse_raw_tx(raw) if raw is not None else None
        if tx is None or tx.txid != txid:
            return 0
        log.warning("the breach %s was already broadcast when its penalty arrived", hash_to_hex_str(txid))
        if self.store.tracker(txid) is not None:
            # Answered before, and a new penalty arrived for it: add it to the response.
            tracker = self.store.tracker(txid)
            assert tracker is not None
            known = {p["txid"] for p in tracker["penalties"]}
            new = [(src, p) for src, p in self._penalties_for(tx) if hash_to_hex_str(p.txid) not in known]
            tracker["penalties"] += [_penalty_entry(src, p) for src, p in new]
            self.store.put_tracker(txid, tracker)
            await self._send_penalties(txid, tracker)
            return len(new)
        return await self.on_transaction(tx, height=None, remember=False)

    # --- blocks ----------------------------------------------------------------------------
    async def on_block(self, block: Block, height: int) -> None:
        """A block joined the best chain at ``height`` (the caller keeps the order)."""
        for tx in block.txs:
            self._remember(tx.txid, block.hash)
            await self.on_transaction(tx, height=height)
            self._note_confirmation(tx, height)
            if not tx.is_coinbase:
                for txin in tx.inputs:
                    self._note_spend(outpoint(txin.prev_hash, txin.prev_idx), tx, height)
        self.height = height
        await self._after_block(height)

    def _note_confirmation(self, tx: Tx, height: int) -> None:
        breach = self.store.tracker(tx.txid)
        if breach is not None and breach["breach_height"] is None:
            breach["breach_height"] = height
            self.store.put_tracker(tx.txid, breach)
        breach_txid = self.store.penalty_breach(tx.txid)
        if breach_txid is None:
            return
        tracker = self.store.tracker(breach_txid)
        if tracker is None:
            return
        for penalty in tracker["penalties"]:
            if penalty["txid"] == hash_to_hex_str(tx.txid) and penalty["height"] is None:
                penalty["height"] = height
                self.stats["penalties_confirmed"] += 1
                log.warning("penalty %s confirmed at height %d: breach %s stopped",
                            penalty["txid"], height, tracker["breach_txid"])
                self.notify("penalty_confirmed", tracker["breach_txid"])
        self.store.put_tracker(breach_txid, tracker)

    def _note_spend(self, spent: bytes, tx: Tx, height: int) -> None:
        channel = self.store.channel(spent)
        if channel is None or channel.get("closed_height") is not None:
            return
        log.info("channel %s:%d closed by %s at height %d", hash_to_hex_str(spent[:32]),
                 int.from_bytes(spent[32:], "big"), hash_to_hex_str(tx.txid), height)
        self.store.update_channel(spent, closed_by=hash_to_hex_str(tx.txid), closed_height=height)

    async def _after_block(self, height: int) -> None:
        # Unconfirmed penalties are sent again each block: a full mempool may have
        # dropped them, or the breach (their parent) only now reached this node.
        for breach_txid, tracker in list(self.store.trackers()):
            if tracker["final"]:
                continue
            pending = [p for p in tracker["penalties"] if p["height"] is None]
            if pending:
                if tracker["breach_height"] is None:
                    await self.broadcast(bytes.fromhex(tracker["breach_raw"]))
                await self._send_penalties(breach_txid, tracker)
            elif min(p["height"] for p in tracker["penalties"]) + self.finality_depth <= height + 1:
                tracker["final"] = True
                self.store.put_tracker(breach_txid, tracker)
        for funding, channel in list(self.store.channels()):
            closed = channel.get("closed_height")
            if closed is not None and closed + self.finality_depth <= height + 1:
                gone = self.store.drop_channel(funding)
                log.info("channel %s:%d closed %d blocks deep: %d sweeps dropped",
                         hash_to_hex_str(funding[:32]), int.from_bytes(funding[32:], "big"),
                         height - closed + 1, gone)
        for user in list(self.store.users()):
            if user.subscription_expiry + 6 < height:  # rust-teos's expiry_delta
                gone = self.store.drop_user(user.user_id)
                log.info("subscription of %s expired: %d appointments dropped",
                         user.user_id.hex(), gone)

    async def on_disconnect(self, height: int) -> None:
        """The block at ``height`` left the best chain: whatever it confirmed did not
        happen; breaches and penalties it held are broadcast again."""
        for breach_txid, tracker in list(self.store.trackers()):
            changed = False
            if tracker["breach_height"] is not None and tracker["breach_height"] >= height:
                tracker["breach_height"] = None
                changed = True
            for penalty in tracker["penalties"]:
                if penalty["height"] is not None and penalty["height"] >= height:
                    penalty["height"] = None
                    tracker["final"] = False
                    changed = True
            if changed:
                log.warning("reorg at height %d undid breach %s or its penalty: rebroadcasting",
                            height, tracker["breach_txid"])
                self.notify("reorg_rebroadcast", tracker["breach_txid"])
                await self.broadcast(bytes.fromhex(tracker["breach_raw"]))
                await self._send_penalties(breach_txid, tracker)
        for funding, channel in list(self.store.channels()):
            if channel.get("closed_height") is not None and channel["closed_height"] >= height:
                self.store.update_channel(funding, closed_by=None, closed_height=None)
        self.height = height - 1


def parse_raw_tx(raw: bytes) -> Tx | None:
    try:
        return parse_tx(raw)
    except ChainParseError:
        return None

"""The wallets' slice of bitcoind's mempool, in memory (the mempool is bitcoind's; we
only keep the transactions that touch watched scripts, rebuilt from bitcoind at start).

Heights follow the Electrum protocol: 0 when every input is confirmed, -1 when some
input spends another unconfirmed transaction. Order is canonical (protocol 1.6):
``(-height, txid in display hex)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..chain import Tx, hash_to_hex_str
from .matcher import TxMatch, outpoint

__all__ = ["Mempool", "MempoolTx"]


@dataclass(slots=True)
class MempoolTx:
    tx: Tx
    match: TxMatch
    fee: int
    unconfirmed_parents: bool

    @property
    def txid(self) -> bytes:
        return self.tx.txid

    @property
    def height(self) -> int:
        return -1 if self.unconfirmed_parents else 0


@dataclass
class Mempool:
    txs: dict[bytes, MempoolTx] = field(default_factory=dict)
    by_scripthash: dict[bytes, set[bytes]] = field(default_factory=dict)
    #: our outputs created by mempool txs: outpoint -> (scripthash, value)
    created: dict[bytes, tuple[bytes, int]] = field(default_factory=dict)
    #: outpoints (ours) spent by mempool txs -> spending txid
    spent: dict[bytes, bytes] = field(default_factory=dict)

    def __contains__(self, txid: bytes) -> bool:
        return txid in self.txs

    def lookup_created(self, op: bytes) -> tuple[bytes, int] | None:
        return self.created.get(op)

    def add(self, entry: MempoolTx) -> set[bytes]:
        """Add a matching tx; returns the scripthashes whose status changed."""
        if entry.txid in self.txs:
            return set()
        self.txs[entry.txid] = entry
        for sh in entry.match.scripthashes:
            self.by_scripthash.setdefault(sh, set()).add(entry.txid)
        for f in entry.match.funding:
            self.created[outpoint(entry.txid, f.vout)] = (f.scripthash, f.value)
        for s in entry.match.spending:
            self.spent[outpoint(s.prev_txid, s.prev_vout)] = entry.txid
        return entry.match.scripthashes

    def remove(self, txid: bytes) -> set[bytes]:
        """Drop a tx (confirmed, replaced, evicted); returns touched scripthashes."""
        entry = self.txs.pop(txid, None)
        if entry is None:
            return set()
        for sh in entry.match.scripthashes:
            ids = self.by_scripthash.get(sh)
            if ids is not None:
                ids.discard(txid)
                if not ids:
                    del self.by_scripthash[sh]
        for f in entry.match.funding:
            self.created.pop(outpoint(txid, f.vout), None)
        for s in entry.match.spending:
            op = outpoint(s.prev_txid, s.prev_vout)
            if self.spent.get(op) == txid:
                del self.spent[op]
        return entry.match.scripthashes

    def clear(self) -> set[bytes]:
        touched = set(self.by_scripthash)
        self.txs.clear()
        self.by_scripthash.clear()
        self.created.clear()
        self.spent.clear()
        return touched

    def entries(self, scripthash: bytes) -> list[MempoolTx]:
        """Canonical order: height 0 before -1, then txid as displayed."""
        entries = [self.txs[t] for t in self.by_scripthash.get(scripthash, ())]
        entries.sort(key=lambda e: (-e.height, hash_to_hex_str(e.txid)))
        return entries

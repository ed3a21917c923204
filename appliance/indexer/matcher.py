"""Which transactions of a block or of the mempool touch the watched scripts (pure code).

A transaction touches a scripthash when one of its outputs pays the script (funding) or
one of its inputs spends an output that paid it (spending). Outputs created earlier in
the same block count, so chains of transactions inside one block are found.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from ..chain import Tx, script_to_scripthash

__all__ = ["Funding", "Spending", "TxMatch", "iter_matches", "match_txs"]

#: outpoint (txid + vout as 4-byte BE) -> (scripthash, value) of a watched output, or None
OutpointLookup = Callable[[bytes], tuple[bytes, int] | None]


@dataclass(frozen=True, slots=True)
class Funding:
    vout: int
    script: bytes
    scripthash: bytes
    value: int


@dataclass(frozen=True, slots=True)
class Spending:
    prev_txid: bytes
    prev_vout: int
    scripthash: bytes
    value: int


@dataclass(slots=True)
class TxMatch:
    tx: Tx
    pos: int
    funding: list[Funding] = field(default_factory=list)
    spending: list[Spending] = field(default_factory=list)

    @property
    def scripthashes(self) -> set[bytes]:
        return {f.scripthash for f in self.funding} | {s.scripthash for s in self.spending}


def outpoint(txid: bytes, vout: int) -> bytes:
    return txid + vout.to_bytes(4, "big")


def match_txs(txs: Iterable[Tx], watched: Callable[[bytes], bool],
              lookup: OutpointLookup) -> list[TxMatch]:
    """Match transactions in order; ``watched(script)`` says whether a script is ours."""
    return [m for m in iter_matches(txs, watched, lookup) if m is not None]


def iter_matches(txs: Iterable[Tx], watched: Callable[[bytes], bool],
                 lookup: OutpointLookup,
                 positions: Iterable[int] | None = None) -> Iterator[TxMatch | None]:
    """``match_txs`` one transaction at a time (None: no match), so a caller can give
    the event loop a turn in the middle of a 3,000-transaction block. ``positions``:
    each tx's place in its block when ``txs`` are only some of them (a screen's)."""
    created: dict[bytes, tuple[bytes, int]] = {}  # our outputs made earlier in this batch
    for pos, tx in zip(positions, txs, strict=True) if positions is not None \
            else enumerate(txs):
        m = TxMatch(tx, pos)
        if not tx.is_coinbase:
            for txin in tx.inputs:
                op = outpoint(txin.prev_hash, txin.prev_idx)
                hit = created.get(op) or lookup(op)
                if hit is not None:
                    m.spending.append(Spending(txin.prev_hash, txin.prev_idx, hit[0], hit[1]))
        for vout, txout in enumerate(tx.outputs):
            script = txout.script_pubkey
            if watched(script):
                sh = script_to_scripthash(script)
                m.funding.append(Funding(vout, script, sh, txout.value))
                created[outpoint(tx.txid, vout)] = (sh, txout.value)
        yield m if m.funding or m.spending else None

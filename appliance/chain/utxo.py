"""An unspent output as the index keeps it and the Electrum backend serves it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Utxo"]


@dataclass(frozen=True, slots=True)
class Utxo:
    txid: bytes  # internal byte order
    vout: int
    height: int  # 0 for mempool
    value: int  # satoshis

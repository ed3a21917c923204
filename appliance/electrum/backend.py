"""What the Electrum protocol core needs from the index: the ``ElectrumBackend`` interface.

The protocol layer (framing, JSON-RPC, sessions, method tables) depends only on this
``Protocol``; the indexer implements it over LevelDB and bitcoind, tests may pass a fake.
Hashes are bytes in internal (wire) byte order unless a name says ``_hex`` (display order).
Scripthashes are the exception, as in the protocol: the bytes of the wire hex, i.e. the
*reversed* sha256 of the script (``appliance.chain.script_to_scripthash``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..chain.utxo import Utxo

__all__ = [
    "BackendError",
    "ElectrumBackend",
    "HistoryItem",
    "MerkleProof",
    "TipListener",
    "ScripthashListener",
    "Utxo",
]


class BackendError(Exception):
    """A request the backend cannot answer (pruned block, unknown tx, node error).

    ``message`` is safe to send to a client: it never names watched scripts or secrets.
    ``code`` follows the Electrum servers' convention (1 = bad request, 2 = daemon error).
    """

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True, slots=True)
class HistoryItem:
    txid: bytes  # internal byte order
    height: int  # > 0 confirmed; 0 mempool with confirmed inputs; -1 mempool with unconfirmed
    fee: int | None = None  # satoshis; mempool entries only


@dataclass(frozen=True, slots=True)
class MerkleProof:
    block_height: int
    pos: int
    branch: list[bytes]  # internal byte order, leaf level first


TipListener = Callable[[int, bytes], Awaitable[None]]  # (height, raw 80-byte header)
ScripthashListener = Callable[[set[bytes]], Awaitable[None]]  # changed scripthashes


class ElectrumBackend(Protocol):
    @property
    def genesis_hash(self) -> bytes:
        """Genesis block hash, internal order."""

    def tip(self) -> tuple[int, bytes]:
        """(height, raw header) of the best block the index has applied."""

    async def headers(self, start_height: int, count: int) -> list[bytes]:
        """Up to ``count`` raw headers from ``start_height`` (fewer past the tip)."""

    async def header_branch(self, height: int, cp_height: int) -> tuple[list[bytes], bytes]:
        """Merkle branch of header ``height`` in the tree of headers 0..cp_height, and root."""

    async def history(self, scripthash: bytes) -> list[HistoryItem]:
        """Confirmed entries in block order, then mempool entries in canonical order."""

    async def mempool(self, scripthash: bytes) -> list[HistoryItem]:
        """Only the mempool entries (with fee), canonical order."""

    async def balance(self, scripthash: bytes) -> tuple[int, int]:
        """(confirmed, unconfirmed) satoshis; unconfirmed may be negative."""

    async def unspent(self, scripthash: bytes) -> list[Utxo]:
        """Unspent outputs incl. mempool ones, excluding outputs spent in the mempool."""

    async def transaction(self, txid: bytes) -> bytes:
        """Raw transaction; BackendError if unknown to both the index and bitcoind."""

    async def transaction_verbose(self, txid: bytes) -> dict[str, Any]:
        """bitcoind's ``getrawtransaction`` verbose form (with confirmations)."""

    async def merkle_proof(self, txid: bytes, height: int) -> MerkleProof:
        """Proof for a confirmed tx at ``height``; BackendError if not confirmed there."""

    async def id_from_pos(self, height: int, pos: int) -> tuple[bytes, list[bytes]]:
        """(txid, merkle branch) of the tx at ``pos`` in block ``height``."""

    async def broadcast(self, raw_tx: bytes) -> bytes:
        """Send to bitcoind; returns the txid. BackendError carries bitcoind's reason."""

    async def broadcast_package(self, raw_txs: list[bytes]) -> dict[str, Any]:
        """bitcoind's ``submitpackage`` result (``package_msg``, ``tx-results`` by wtxid,
        each with ``txid`` and maybe ``error``); BackendError if the RPC itself fails."""

    async def estimate_fee(self, blocks: int, mode: str | None) -> float:
        """BTC per kvB, or -1 when bitcoind has no estimate."""

    async def relay_fee(self) -> float:
        """Minimum relay fee, BTC per kvB."""

    async def fee_histogram(self) -> list[tuple[float, int]]:
        """[(fee rate sat/vB, cumulative vsize)] from highest rate, ElectrumX style."""

    async def mempool_info(self) -> dict[str, Any]:
        """``mempool.get_info`` result (mempoolminfee, minrelaytxfee, incrementalrelayfee)."""

    def is_watched(self, scripthash: bytes) -> bool:
        """Whether the scripthash belongs to a registered wallet (never told to clients)."""

    async def script_queried(self, scripthash: bytes) -> None:
        """A client asked about this scripthash (lets the gap limit grow on demand)."""

    def watch_script(self, scripthash: bytes) -> bool:
        """A client subscribed to a scripthash no wallet owns (Lightning's channel
        scripts): watch it from now on. True if a new watch was taken (the session
        counts those against its limit); False if refused or already watched."""

    def add_listeners(self, on_tip: TipListener, on_scripthashes: ScripthashListener) -> None:
        """Register callbacks for new tips and for scripthashes whose history changed."""

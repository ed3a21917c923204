"""Block and header parsing, with the merkle root checked against the parsed txids."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from appliance.chain.encoding import (
    ByteReader,
    BytesLike,
    ChainParseError,
    _as_view,
    _read_varint_at,
    double_sha256,
    varint_size,
)
from appliance.chain.merkle import merkle_root_and_mutation
from appliance.chain.tx import Tx, _parse_tx_at

__all__ = [
    "HEADER_SIZE",
    "Block",
    "BlockHeader",
    "iter_block_txs",
    "parse_block",
    "parse_header",
    "read_header",
]

HEADER_SIZE = 80

_HEADER = struct.Struct("<i32s32sIII").unpack_from
# The parser accepts nothing shorter than 51 bytes (version, one input with an empty
# script, zero outputs, locktime): used to reject absurd tx counts up front.
_MIN_TX_SIZE = 51


@dataclass(slots=True, frozen=True)
class BlockHeader:
    """An 80-byte header; ``hash``, ``prev_hash`` and ``merkle_root`` in internal order."""

    version: int
    prev_hash: bytes
    merkle_root: bytes
    timestamp: int
    bits: int
    nonce: int
    hash: bytes
    raw: bytes


@dataclass(slots=True)
class Block:
    """A header and its transactions, coinbase first."""

    header: BlockHeader
    txs: list[Tx]

    @property
    def hash(self) -> bytes:
        """Block hash, internal order."""
        return self.header.hash

    @property
    def size(self) -> int:
        """Serialised size with witness data (bitcoind's ``size``)."""
        return HEADER_SIZE + varint_size(len(self.txs)) + sum(tx.size for tx in self.txs)

    @property
    def stripped_size(self) -> int:
        """Serialised size without witness data (bitcoind's ``strippedsize``)."""
        return HEADER_SIZE + varint_size(len(self.txs)) + sum(tx.base_size for tx in self.txs)

    @property
    def weight(self) -> int:
        """BIP141 block weight."""
        return self.stripped_size * 3 + self.size


def _header_at(buf: memoryview, pos: int) -> BlockHeader:
    if len(buf) - pos < HEADER_SIZE:
        raise ChainParseError(f"truncated block header at offset {pos}")
    raw = buf[pos : pos + HEADER_SIZE].tobytes()
    version, prev_hash, merkle_root, timestamp, bits, nonce = _HEADER(raw)
    return BlockHeader(
        version, prev_hash, merkle_root, timestamp, bits, nonce, double_sha256(raw), raw
    )


def parse_header(data: BytesLike) -> BlockHeader:
    """Parse exactly 80 header bytes."""
    buf = _as_view(data)
    if len(buf) != HEADER_SIZE:
        raise ChainParseError(f"a block header is {HEADER_SIZE} bytes, got {len(buf)}")
    return _header_at(buf, 0)


def read_header(reader: ByteReader) -> BlockHeader:
    """Read one header at the reader's position and advance past it."""
    header = _header_at(reader.view, reader.offset)
    reader.seek(reader.offset + HEADER_SIZE)
    return header


def _check_merkle(header: BlockHeader, txids: list[bytes]) -> None:
    root, mutated = merkle_root_and_mutation(txids)
    if root != header.merkle_root:
        raise ChainParseError("merkle root does not match the block's transactions")
    if mutated:
        raise ChainParseError("mutated block: duplicate sibling hashes in the merkle tree")


def _iter_txs(buf: memoryview, header: BlockHeader, verify_merkle: bool) -> Iterator[Tx]:
    count, pos = _read_varint_at(buf, HEADER_SIZE)
    if count == 0:
        raise ChainParseError("block has no transactions")
    if count * _MIN_TX_SIZE > len(buf) - pos:
        raise ChainParseError(f"transaction count {count} exceeds the block data")
    txids: list[bytes] = []
    for _ in range(count):
        tx, pos = _parse_tx_at(buf, pos)
        txids.append(tx.txid)
        yield tx
    if pos != len(buf):
        raise ChainParseError(f"{len(buf) - pos} trailing bytes after the last transaction")
    if verify_merkle:
        _check_merkle(header, txids)


def parse_block(data: BytesLike, *, verify_merkle: bool = True) -> Block:
    """Parse a whole serialised block (as from ``getblock <hash> 0``).

    With ``verify_merkle`` the header's merkle root must match the txids and the tree
    must not be mutated; either failure raises :class:`ChainParseError`.
    """
    buf = _as_view(data)
    header = _header_at(buf, 0)
    return Block(header, list(_iter_txs(buf, header, verify_merkle)))


def iter_block_txs(data: BytesLike, *, verify_merkle: bool = True) -> Iterator[Tx]:
    """Yield a block's transactions one at a time, without building a :class:`Block`.

    Every transaction is parsed and yielded before the checks that need them all (no
    trailing bytes, merkle root), which raise only after the last tx is yielded:
    consume the iterator to the end before committing anything derived from it. The
    header is available separately via ``parse_header(data[:80])``.
    """
    buf = _as_view(data)
    header = _header_at(buf, 0)
    return _iter_txs(buf, header, verify_merkle)

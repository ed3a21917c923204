"""Raw transaction parsing (legacy and BIP144 segwit serialisation).

The parser keeps each transaction's exact bytes (``Tx.raw``) and derives the txid
from slices of the input buffer, so nothing is re-serialised on the hot path. It
follows bitcoind's ``UnserializeTransaction``: a zero byte where the input count
belongs must be the segwit marker followed by flag 0x01, and a segwit encoding
whose witnesses are all empty is refused ("superfluous witness record"). The
legacy zero-input form never appears in blocks and is not supported.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from appliance.chain.encoding import (
    ByteReader,
    BytesLike,
    ChainParseError,
    _as_view,
    _read_varint_at,
    double_sha256,
    write_varint,
)

__all__ = [
    "COINBASE_PREV_IDX",
    "NULL_HASH",
    "Tx",
    "TxIn",
    "TxOut",
    "parse_tx",
    "read_tx",
    "serialize_tx",
]

#: prev_hash of a coinbase input (all zero, internal order).
NULL_HASH = bytes(32)
#: prev_idx of a coinbase input.
COINBASE_PREV_IDX = 0xFFFFFFFF

_OUTPOINT = struct.Struct("<32sI").unpack_from
_U32 = struct.Struct("<I").unpack_from
_I64 = struct.Struct("<q").unpack_from
_PACK_U32 = struct.Struct("<I").pack
_PACK_I64 = struct.Struct("<q").pack
_PACK_OUTPOINT = struct.Struct("<32sI").pack

# Smallest possible serialised input (outpoint + empty script + sequence) and output
# (value + empty script): used to reject absurd counts before allocating anything.
_MIN_TXIN_SIZE = 41
_MIN_TXOUT_SIZE = 9
_sha256 = hashlib.sha256


@dataclass(slots=True)
class TxIn:
    """One input. ``prev_hash`` is the spent txid in internal byte order."""

    prev_hash: bytes
    prev_idx: int
    script_sig: bytes
    sequence: int
    witness: list[bytes] = field(default_factory=list)

    @property
    def is_coinbase(self) -> bool:
        """True for the null outpoint a coinbase input spends."""
        return self.prev_idx == COINBASE_PREV_IDX and self.prev_hash == NULL_HASH


@dataclass(slots=True)
class TxOut:
    """One output; ``value`` in satoshis (int64 on the wire, like bitcoind's CAmount)."""

    value: int
    script_pubkey: bytes


@dataclass(slots=True)
class Tx:
    """A parsed transaction.

    ``raw`` is the exact serialisation read (with witness data if present); ``txid``
    is in internal byte order (``hash_to_hex_str(tx.txid)`` gives bitcoind's txid);
    ``base_size`` is the size without witness data. ``version`` is read unsigned, as
    bitcoind has done since v28.
    """

    version: int
    inputs: list[TxIn]
    outputs: list[TxOut]
    locktime: int
    txid: bytes
    raw: bytes
    base_size: int

    @property
    def is_segwit(self) -> bool:
        """True when serialised with the BIP144 marker, flag and witnesses."""
        return self.base_size != len(self.raw)

    @property
    def wtxid(self) -> bytes:
        """BIP141 witness txid, internal order; equals ``txid`` for non-segwit txs.

        Computed on each access (most callers never need it), so cache it if used often.
        """
        return double_sha256(self.raw) if self.base_size != len(self.raw) else self.txid

    @property
    def size(self) -> int:
        """Serialised size in bytes, witness included (bitcoind's ``size``)."""
        return len(self.raw)

    @property
    def weight(self) -> int:
        """BIP141 weight: base size x 3 + total size."""
        return self.base_size * 3 + len(self.raw)

    @property
    def vsize(self) -> int:
        """Virtual size: weight / 4, rounded up."""
        return (self.base_size * 3 + len(self.raw) + 3) // 4

    @property
    def is_coinbase(self) -> bool:
        """bitcoind's ``IsCoinBase``: exactly one input, spending the null outpoint."""
        return len(self.inputs) == 1 and self.inputs[0].is_coinbase

    def serialize(self, *, include_witness: bool = True) -> bytes:
        """Re-serialise from the fields (``raw`` already holds the original bytes)."""
        return serialize_tx(
            self.version,
            self.inputs,
            self.outputs,
            self.locktime,
            include_witness=include_witness,
        )


def serialize_tx(
    version: int,
    inputs: Sequence[TxIn],
    outputs: Sequence[TxOut],
    locktime: int,
    *,
    include_witness: bool = True,
) -> bytes:
    """Serialise a transaction; segwit form only if asked and some input has a witness."""
    segwit = include_witness and any(txin.witness for txin in inputs)
    parts = [_PACK_U32(version)]
    if segwit:
        parts.append(b"\x00\x01")
    parts.append(write_varint(len(inputs)))
    for txin in inputs:
        parts.append(_PACK_OUTPOINT(txin.prev_hash, txin.prev_idx))
        parts.append(write_varint(len(txin.script_sig)))
        parts.append(txin.script_sig)
        parts.append(_PACK_U32(txin.sequence))
    parts.append(write_varint(len(outputs)))
    for txout in outputs:
        parts.append(_PACK_I64(txout.value))
        parts.append(write_varint(len(txout.script_pubkey)))
        parts.append(txout.script_pubkey)
    if segwit:
        for txin in inputs:
            parts.append(write_varint(len(txin.witness)))
            for item in txin.witness:
                parts.append(write_varint(len(item)))
                parts.append(item)
    parts.append(_PACK_U32(locktime))
    return b"".join(parts)


def _parse_tx_at(buf: memoryview, start: int) -> tuple[Tx, int]:
    """Parse the transaction at ``start``; returns it and the offset just past it.

    Fixed-width reads rely on struct/IndexError for bounds (converted below); every
    variable-length slice is checked explicitly, as memoryview slicing never fails.
    One-byte compact sizes (nearly all of them) are decoded inline: this loop is the
    indexer's hot path.
    """
    end = len(buf)
    varint = _read_varint_at
    try:
        version = _U32(buf, start)[0]
        ins_start = start + 4
        n_in, pos = varint(buf, ins_start)
        segwit = n_in == 0
        if segwit:
            flag = buf[pos]
            if flag != 1:
                raise ChainParseError(
                    f"unsupported transaction flag {flag:#04x} at offset {pos} "
                    "(zero-input legacy transactions are not supported)"
                )
            ins_start = pos + 1
            n_in, pos = varint(buf, ins_start)
            if n_in == 0:
                raise ChainParseError(f"segwit transaction without inputs at offset {start}")
        if n_in * _MIN_TXIN_SIZE > end - pos:
            raise ChainParseError(f"input count {n_in} exceeds the data at offset {start}")

        # Inputs are collected as plain tuples because a segwit witness follows the outputs.
        raw_inputs: list[tuple[bytes, int, bytes, int]] = []
        for _ in range(n_in):
            prev_hash, prev_idx = _OUTPOINT(buf, pos)
            pos += 36
            script_len = buf[pos]
            if script_len < 0xFD:
                pos += 1
            else:
                script_len, pos = varint(buf, pos)
            script_end = pos + script_len
            if script_end > end:
                raise ChainParseError(f"truncated scriptSig at offset {pos}")
            raw_inputs.append(
                (prev_hash, prev_idx, buf[pos:script_end].tobytes(), _U32(buf, script_end)[0])
            )
            pos = script_end + 4

        n_out, pos = varint(buf, pos)
        if n_out * _MIN_TXOUT_SIZE > end - pos:
            raise ChainParseError(f"output count {n_out} exceeds the data at offset {start}")
        outputs: list[TxOut] = []
        for _ in range(n_out):
            value = _I64(buf, pos)[0]
            pos += 8
            script_len = buf[pos]
            if script_len < 0xFD:
                pos += 1
            else:
                script_len, pos = varint(buf, pos)
            script_end = pos + script_len
            if script_end > end:
                raise ChainParseError(f"truncated scriptPubKey at offset {pos}")
            outputs.append(TxOut(value, buf[pos:script_end].tobytes()))
            pos = script_end

        if segwit:
            witness_start = pos
            inputs: list[TxIn] = []
            has_witness = False
            for prev_hash, prev_idx, script_sig, sequence in raw_inputs:
                n_items, pos = varint(buf, pos)
                if n_items > end - pos:
                    raise ChainParseError(f"witness item count {n_items} exceeds the data")
                stack: list[bytes] = []
                for _ in range(n_items):
                    item_len = buf[pos]
                    if item_len < 0xFD:
                        pos += 1
                    else:
                        item_len, pos = varint(buf, pos)
                    item_end = pos + item_len
                    if item_end > end:
                        raise ChainParseError(f"truncated witness item at offset {pos}")
                    stack.append(buf[pos:item_end].tobytes())
                    pos = item_end
                has_witness = has_witness or n_items > 0
                inputs.append(TxIn(prev_hash, prev_idx, script_sig, sequence, stack))
            if not has_witness:
                raise ChainParseError(f"superfluous witness record in tx at offset {start}")
        else:
            inputs = [TxIn(h, i, s, q, []) for h, i, s, q in raw_inputs]

        locktime = _U32(buf, pos)[0]
        pos += 4
    except (IndexError, struct.error):
        raise ChainParseError(f"truncated transaction starting at offset {start}") from None

    raw = buf[start:pos].tobytes()
    if segwit:
        # txid commits to the stripped form: version | inputs..outputs | locktime. Hash
        # those three slices in place instead of building the stripped bytes.
        hasher = _sha256(buf[start : start + 4])
        hasher.update(buf[ins_start:witness_start])
        hasher.update(buf[pos - 4 : pos])
        txid = _sha256(hasher.digest()).digest()
        base_size = 8 + witness_start - ins_start
    else:
        txid = _sha256(_sha256(raw).digest()).digest()
        base_size = len(raw)
    return Tx(version, inputs, outputs, locktime, txid, raw, base_size), pos


def read_tx(reader: ByteReader) -> Tx:
    """Read one transaction at the reader's position and advance past it."""
    tx, end = _parse_tx_at(reader.view, reader.offset)
    reader.seek(end)
    return tx


def parse_tx(data: BytesLike) -> Tx:
    """Parse a buffer holding exactly one serialised transaction."""
    buf = _as_view(data)
    tx, end = _parse_tx_at(buf, 0)
    if end != len(buf):
        raise ChainParseError(f"{len(buf) - end} trailing bytes after transaction")
    return tx

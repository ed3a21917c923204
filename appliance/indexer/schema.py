"""LevelDB key layout of the indexer (documented table by table in docs/index-schema.md).

One byte of prefix per table; heights are 4-byte big-endian so keys sort in chain order;
hashes are 32 bytes in internal byte order; output indexes 4-byte big-endian.
"""

from __future__ import annotations

import struct

__all__ = [
    "DB_FORMAT",
    "P_ADHOC",
    "P_CONF",
    "P_FORMAT",
    "P_HEADER",
    "P_HISTORY",
    "P_OUTPUT",
    "P_SCRIPT_OUTPUT",
    "P_SPENT",
    "P_TIP",
    "P_TX",
    "P_UNDO",
    "P_WALLET",
    "P_WALLET_SCRIPT",
    "UNDO_DEPTH",
    "adhoc_key",
    "conf_key",
    "header_key",
    "history_key",
    "output_key",
    "pack_height",
    "script_output_key",
    "spent_key",
    "tx_key",
    "undo_key",
    "unpack_height",
    "wallet_key",
    "wallet_script_key",
]

#: Bump when the layout changes; a mismatch makes the indexer rebuild from scratch.
DB_FORMAT = 1

#: Undo records are kept for this many blocks below the tip (pruned nodes keep 288).
UNDO_DEPTH = 300

P_FORMAT = b"F"  # -> DB_FORMAT u32 BE + genesis hash (32)
P_TIP = b"T"  # -> height u32 BE + block hash (32)
P_HEADER = b"H"  # + height -> 80-byte header
P_WALLET = b"W"  # + wallet id (8) -> JSON wallet record
P_WALLET_SCRIPT = b"K"  # + wallet id (8) + branch u8 + index u32 BE -> scriptPubKey
P_HISTORY = b"h"  # + scripthash + height + tx position u32 BE -> txid
P_OUTPUT = b"O"  # + txid + vout -> scripthash + value u64 BE + height
P_SCRIPT_OUTPUT = b"u"  # + scripthash + height + txid + vout -> b""
P_SPENT = b"s"  # + txid + vout -> spending txid + height
P_TX = b"t"  # + txid -> raw transaction
P_CONF = b"c"  # + txid -> height + position + merkle branch (32 bytes each)
P_UNDO = b"U"  # + height -> undo record (see store.encode_undo)
P_ADHOC = b"A"  # + scripthash -> added u64 BE + last subscribed u64 BE (unix seconds)

_H = struct.Struct(">I")


def pack_height(height: int) -> bytes:
    return _H.pack(height)


def unpack_height(data: bytes, offset: int = 0) -> int:
    return int(_H.unpack_from(data, offset)[0])


def header_key(height: int) -> bytes:
    return P_HEADER + _H.pack(height)


def wallet_key(wallet_id: bytes) -> bytes:
    return P_WALLET + wallet_id


def wallet_script_key(wallet_id: bytes, branch: int, index: int) -> bytes:
    return P_WALLET_SCRIPT + wallet_id + bytes([branch]) + _H.pack(index)


def history_key(scripthash: bytes, height: int, pos: int, ) -> bytes:
    return P_HISTORY + scripthash + _H.pack(height) + _H.pack(pos)


def output_key(txid: bytes, vout: int) -> bytes:
    return P_OUTPUT + txid + _H.pack(vout)


def script_output_key(scripthash: bytes, height: int, txid: bytes, vout: int) -> bytes:
    return P_SCRIPT_OUTPUT + scripthash + _H.pack(height) + txid + _H.pack(vout)


def spent_key(txid: bytes, vout: int) -> bytes:
    return P_SPENT + txid + _H.pack(vout)


def tx_key(txid: bytes) -> bytes:
    return P_TX + txid


def conf_key(txid: bytes) -> bytes:
    return P_CONF + txid


def adhoc_key(scripthash: bytes) -> bytes:
    return P_ADHOC + scripthash


def undo_key(height: int) -> bytes:
    return P_UNDO + _H.pack(height)

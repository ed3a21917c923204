"""A byte-level screen of a raw block: which transactions could touch a wallet.

On a busy wallet's chain every block matches its filter, and parsing every transaction
into objects was a quarter of adding a wallet. The screen walks the transaction
boundaries of the raw bytes instead, hashing each txid (the merkle tree needs them
all) and comparing output scripts and spent txids as byte slices: only transactions
that pay a known script or spend an output of a transaction with a wallet output are
parsed into :class:`Tx` objects. It is a superset test; the exact match
(``matcher.iter_matches``) runs on what it keeps, so the result is the full parse's.

It refuses what ``parse_block`` refuses that matters for a block bitcoind served:
truncation, trailing bytes, a merkle root that does not match or a mutated tree, a
segwit encoding without witnesses, non-canonical compact sizes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Container
from dataclasses import dataclass

from ..chain import Tx
from ..chain.block import HEADER_SIZE, BlockHeader, parse_header
from ..chain.encoding import ChainParseError, _read_varint_at
from ..chain.merkle import MerkleTree
from ..chain.tx import _parse_tx_at

__all__ = ["ScreenedBlock", "screen_block"]

_sha256 = hashlib.sha256


@dataclass(slots=True)
class ScreenedBlock:
    header: BlockHeader
    txids: list[bytes]
    tree: MerkleTree  # built once: the root check and every match's branch
    positions: list[int]  # the transactions kept by the last screen, in block order
    txs: list[Tx]  # ... parsed
    _view: memoryview
    _starts: list[int]  # offset of every transaction, then the end of the last one
    _scripts: Container[bytes]
    _funded: Container[bytes]

    def rescreen(self) -> None:
        """Screen again: the containers given to ``screen_block`` have grown (scripts
        derived while matching)."""
        keep = self._walk(self._scripts, self._funded)
        self.positions = keep
        self.txs = [_parse_tx_at(self._view, self._starts[i])[0] for i in keep]

    def pays_any(self, scripts: Collection[bytes]) -> bool:
        """Whether some output of the block pays one of ``scripts`` (a few: each is
        first looked for anywhere in the block's bytes, much cheaper than a walk)."""
        buf = self._view.obj
        assert isinstance(buf, bytes)
        if not any(script in buf for script in scripts):
            return False
        return bool(self._walk(scripts, ()))

    def _walk(self, scripts: Container[bytes], funded: Container[bytes]) -> list[int]:
        buf = self._view.obj
        assert isinstance(buf, bytes)
        return _walk(buf, self._view, scripts, funded, self.txids)[2]


def screen_block(raw: bytes, scripts: Container[bytes],
                 funded: Container[bytes]) -> ScreenedBlock:
    """Walk ``raw`` (a serialised block), keep the transactions with an output script in
    ``scripts`` or an input spending a txid in ``funded`` (or a kept transaction
    earlier in the block), and check the merkle root. Both containers are kept for
    ``rescreen``: pass live ones (a superset of what the exact match watches)."""
    view = memoryview(raw)
    header = parse_header(view[:HEADER_SIZE])
    starts, txids, keep = _walk(raw, view, scripts, funded, None)
    tree = MerkleTree(txids)
    if tree.root != header.merkle_root:
        raise ChainParseError("merkle root does not match the block's transactions")
    if tree.mutated:
        raise ChainParseError("mutated block: duplicate sibling hashes in the merkle tree")
    txs = [_parse_tx_at(view, starts[i])[0] for i in keep]
    return ScreenedBlock(header, txids, tree, keep, txs, view, starts, scripts, funded)


def _varint(buf: bytes, view: memoryview, pos: int) -> tuple[int, int]:
    first = buf[pos]
    if first < 0xFD:
        return first, pos + 1
    return _read_varint_at(view, pos)  # wide forms: checked for canonical encoding


def _walk(buf: bytes, view: memoryview, scripts: Container[bytes], funded: Container[bytes],
          txids: list[bytes] | None) -> tuple[list[int], list[bytes], list[int]]:
    """Every transaction's start offset (plus the end), every txid (hashed unless
    ``txids`` are known) and the positions kept: those paying a script in ``scripts``
    or spending from a txid in ``funded`` or from a kept transaction before them.
    No objects per transaction beyond its txid; slices only where compared."""
    sha = _sha256
    end = len(buf)
    hashing = txids is None
    ids: list[bytes] = [] if txids is None else txids
    starts: list[int] = []
    keep: list[int] = []
    mine: set[bytes] = set()  # kept txids of this block: their outputs may be spent here
    try:
        count, pos = _varint(buf, view, HEADER_SIZE)
        if count == 0:
            raise ChainParseError("block has no transactions")
        if count * 51 > end - pos:
            raise ChainParseError(f"transaction count {count} exceeds the block data")
        for i in range(count):
            start = pos
            starts.append(start)
            ins = start + 4
            n_in = buf[ins]
            segwit = n_in == 0
            if segwit:
                if buf[ins + 1] != 1:
                    raise ChainParseError(f"unsupported transaction flag at offset {ins + 1}")
                ins += 2
                n_in, pos = _varint(buf, view, ins)
                if n_in == 0:
                    raise ChainParseError(f"segwit transaction without inputs at {start}")
            elif n_in < 0xFD:
                pos = ins + 1
            else:
                n_in, pos = _read_varint_at(view, ins)
            hit = False
            for _ in range(n_in):
                if not hit:
                    prev = buf[pos:pos + 32]
                    hit = prev in funded or prev in mine
                pos += 36
                n = buf[pos]
                pos = pos + 5 + n if n < 0xFD else sum(_read_varint_at(view, pos)) + 4
            n_out = buf[pos]
            if n_out < 0xFD:
                pos += 1
            else:
                n_out, pos = _read_varint_at(view, pos)
            for _ in range(n_out):
                pos += 8
                n = buf[pos]
                if n < 0xFD:
                    pos += 1
                else:
                    n, pos = _read_varint_at(view, pos)
                if not hit and buf[pos:pos + n] in scripts:
                    hit = True
                pos += n
            if segwit:
                stripped_end = pos
                any_item = False
                for _ in range(n_in):
                    items, pos = _varint(buf, view, pos)
                    any_item = any_item or items > 0
                    for _ in range(items):
                        n = buf[pos]
                        pos = pos + 1 + n if n < 0xFD else sum(_read_varint_at(view, pos))
                if not any_item:
                    raise ChainParseError(f"superfluous witness record in tx at {start}")
                pos += 4
                if pos > end:
                    raise IndexError
                if hashing:
                    h = sha(view[start:start + 4])
                    h.update(view[ins:stripped_end])
                    h.update(view[pos - 4:pos])
                    ids.append(sha(h.digest()).digest())
            else:
                pos += 4
                if pos > end:
                    raise IndexError
                if hashing:
                    ids.append(sha(sha(view[start:pos]).digest()).digest())
            if hit:
                keep.append(i)
                mine.add(ids[i])
    except IndexError:
        raise ChainParseError("truncated block") from None
    if pos != end:
        raise ChainParseError(f"{end - pos} trailing bytes after the last transaction")
    starts.append(pos)
    return starts, ids, keep



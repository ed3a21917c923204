"""BIP158 basic block filters: may a block touch any of a wallet's scripts?

bitcoind (``-blockfilterindex=1``) serves one filter per block, also for pruned blocks:
``getblockfilter <blockhash> basic`` -> ``{"filter": hex, ...}``. A filter is a Golomb-Rice
coded set (GCS) of every scriptPubKey the block creates (except empty and OP_RETURN ones)
and every prevout scriptPubKey it spends, each hashed with SipHash-2-4 keyed by the first
16 bytes of the block hash in internal (wire) byte order, then mapped into ``[0, N*M)``.
No match means the block surely does not touch the scripts; a match is a false positive
with probability about ``1/M`` per queried script, so matched blocks must still be fetched
and checked.

Speed matters (a Raspberry Pi walks hundreds of thousands of filters), so no per-element
work runs as Python bytecode on the common path: the Golomb-Rice stream is tokenised by a
regex split over its bit string and the deltas are packed into one integer, and the query
scripts are SipHashed all at once, one 64-bit lane each inside a few big Python ints.
Prepare a :class:`ScriptSet` once per wallet and reuse it for every filter.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Iterator
from collections.abc import Set as AbstractSet
from itertools import accumulate, chain, compress, repeat
from operator import mul, rshift

from ..chain import hash_to_hex_str

__all__ = [
    "FILTER_M",
    "FILTER_P",
    "MAX_FILTER_ELEMENTS",
    "FilterDecodeError",
    "filter_size",
    "GCSFilter",
    "ScriptSet",
    "siphash24",
]

FILTER_P = 19  # Golomb-Rice parameter of the basic filter
FILTER_M = 784931  # inverse false positive rate of the basic filter
MAX_FILTER_ELEMENTS = 0x02000000  # Core's MAX_SIZE: ReadCompactSize refuses larger N

_MASK64 = (1 << 64) - 1
# SipHash initialisation constants ("somepseudorandomlygeneratedbytes").
_C0, _C1, _C2, _C3 = 0x736F6D6570736575, 0x646F72616E646F6D, 0x6C7967656E657261, 0x7465646279746573

# One Golomb-Rice code is a unary quotient (q ones, then a zero) and P remainder bits. Splitting
# on "zero then P bits" yields [ones, remainder, ones, remainder, ..., tail]: the regex search
# skips only ones, so each skipped run is exactly the next quotient. The 8-code pattern yields
# the same list with 8x fewer matches (a quarter less time). It never misaligns: where the end of
# a code is (first zero at or after its start, plus P+1) never decreases as its start moves
# right, so if 8 codes do not fit from the true position they fit from no later one either.
_CODE = f"0(.{{{FILTER_P}}})"
_SPLIT_ONE = re.compile(_CODE, re.DOTALL)
_SPLIT_RUN = 8
_SPLIT_MANY = re.compile(_CODE + f"(1*){_CODE}" * (_SPLIT_RUN - 1), re.DOTALL)


class FilterDecodeError(ValueError):
    """The filter bytes are not a valid BIP158 basic filter."""


def siphash24(key: bytes, data: bytes) -> int:
    """SipHash-2-4 of ``data`` under the 16-byte ``key``, as an int (the LE 64-bit output)."""
    if len(key) != 16:
        raise ValueError(f"SipHash key must be 16 bytes, not {len(key)}")
    k0, k1 = struct.unpack("<QQ", key)
    v0, v1, v2, v3 = k0 ^ _C0, k1 ^ _C1, k0 ^ _C2, k1 ^ _C3
    for m in struct.unpack(f"<{len(data) // 8 + 1}Q", _sip_pad(bytes(data))):
        v3 ^= m
        for _ in range(2):
            v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
        v0 ^= m
    v2 ^= 0xFF
    for _ in range(4):
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    digest: int = v0 ^ v1 ^ v2 ^ v3
    return digest


def _sipround(v0: int, v1: int, v2: int, v3: int) -> tuple[int, int, int, int]:
    m = _MASK64
    v0 = (v0 + v1) & m
    v1 = ((v1 << 13) | (v1 >> 51)) & m ^ v0
    v0 = ((v0 << 32) | (v0 >> 32)) & m
    v2 = (v2 + v3) & m
    v3 = ((v3 << 16) | (v3 >> 48)) & m ^ v2
    v0 = (v0 + v3) & m
    v3 = ((v3 << 21) | (v3 >> 43)) & m ^ v0
    v2 = (v2 + v1) & m
    v1 = ((v1 << 17) | (v1 >> 47)) & m ^ v2
    v2 = ((v2 << 32) | (v2 >> 32)) & m
    return v0, v1, v2, v3


def _sip_pad(data: bytes) -> bytes:
    """The message as SipHash reads it: zero padded to 8k-1 bytes, then the length mod 256."""
    return data + bytes(7 - len(data) % 8) + bytes((len(data) & 0xFF,))


# --- lane-parallel SipHash -------------------------------------------------------------------
# Each script is a 64-bit lane in a big int, lanes 72 bits apart: the 8 spare bits absorb the
# carry of an addition (cleared by one AND) and make the lanes byte aligned, so one
# to_bytes/struct call unpacks them all. A rotation is two shifts whose bits that leave a lane
# are masked off. Every SipHash step is then ~5 big-int operations for all scripts at once.
_LANE_BYTES = 9
_LANE_CHUNK = 4096  # lanes per big int: bounded memory, no slower than bigger ints
_ROTATIONS = (13, 16, 17, 21, 32)


class _Lanes:
    """Up to ``_LANE_CHUNK`` scripts of the same SipHash block count, packed for hashing."""

    __slots__ = ("n", "scripts", "block_count", "packer", "ones", "masks", "blocks")

    def __init__(self, scripts: list[bytes], block_count: int) -> None:
        n = self.n = len(scripts)
        self.scripts = scripts
        self.block_count = block_count
        self.packer = struct.Struct("<" + "Qx" * n)
        self.ones = ones = int.from_bytes(b"\x01".ljust(_LANE_BYTES, b"\x00") * n, "little")
        # The 64-bit lane mask, then per rotation the bits kept from the left and right shifts.
        masks = [_MASK64 * ones]
        for r in _ROTATIONS:
            masks += [((_MASK64 >> r) << r) * ones, ((1 << r) - 1) * ones]
        self.masks = tuple(masks)
        words = struct.unpack(f"<{n * block_count}Q", b"".join(map(_sip_pad, scripts)))
        self.blocks = tuple(int.from_bytes(self.packer.pack(*words[j::block_count]), "little")
                            for j in range(block_count))

    def hashes(self, k0: int, k1: int) -> tuple[int, ...]:
        ones = self.ones
        m, h13, l13, h16, l16, h17, l17, h21, l21, h32, l32 = self.masks
        v0, v1, v2, v3 = (k0 ^ _C0) * ones, (k1 ^ _C1) * ones, (k0 ^ _C2) * ones, (k1 ^ _C3) * ones
        # (xor into v3, into v2, rounds, xor into v0): 2 rounds per message block, then the
        # finalisation's 4.
        steps = [(b, 0, 2, b) for b in self.blocks] + [(0, 0xFF * ones, 4, 0)]
        for into_v3, into_v2, rounds, into_v0 in steps:
            v3 ^= into_v3
            v2 ^= into_v2
            for _ in range(rounds):
                v0 = (v0 + v1) & m
                v1 = ((v1 << 13) & h13 | (v1 >> 51) & l13) ^ v0
                v0 = (v0 << 32) & h32 | (v0 >> 32) & l32
                v2 = (v2 + v3) & m
                v3 = ((v3 << 16) & h16 | (v3 >> 48) & l16) ^ v2
                v0 = (v0 + v3) & m
                v3 = ((v3 << 21) & h21 | (v3 >> 43) & l21) ^ v0
                v2 = (v2 + v1) & m
                v1 = ((v1 << 17) & h17 | (v1 >> 47) & l17) ^ v2
                v2 = (v2 << 32) & h32 | (v2 >> 32) & l32
            v0 ^= into_v0
        result: tuple[int, ...] = self.packer.unpack((v0 ^ v1 ^ v2 ^ v3).to_bytes(
            _LANE_BYTES * self.n, "little"))
        return result


class ScriptSet:
    """Scripts to look for, prepared once (per wallet) and matched against many filters.

    Duplicates are dropped; :attr:`scripts` keeps an internal order that matches
    :meth:`hashes`. Immutable: :meth:`extended` makes a new one when the wallet's
    scripts grow, reusing the packed lanes of the scripts it already had.
    """

    __slots__ = ("scripts", "_members", "_lanes")

    scripts: tuple[bytes, ...]
    _members: frozenset[bytes]
    _lanes: tuple[_Lanes, ...]

    def __init__(self, scripts: Iterable[bytes], *, _base: ScriptSet | None = None) -> None:
        lanes = [] if _base is None else list(_base._lanes)
        members: frozenset[bytes] = frozenset() if _base is None else _base._members
        # memoryview() rejects ints, which bytes() would silently turn into zero strings.
        unique = dict.fromkeys(b for s in scripts if (b := bytes(memoryview(s))) not in members)
        by_blocks: dict[int, list[bytes]] = {}
        for script in unique:
            by_blocks.setdefault(len(script) // 8 + 1, []).append(script)
        for block_count, group in sorted(by_blocks.items()):
            # Like a binary counter: a new group absorbs the last lanes of its block count
            # that are no bigger, so a set grown a few scripts at a time (the gap moving
            # block after block) keeps O(log n) lanes and each script is packed O(log n)
            # times, not once per growth.
            while (same := [i for i, lane in enumerate(lanes)
                            if lane.block_count == block_count]) \
                    and lanes[same[-1]].n <= len(group) \
                    and lanes[same[-1]].n + len(group) <= _LANE_CHUNK:
                group = lanes.pop(same[-1]).scripts + group
            for i in range(0, len(group), _LANE_CHUNK):
                lanes.append(_Lanes(group[i:i + _LANE_CHUNK], block_count))
        self._lanes = tuple(lanes)
        self.scripts = tuple(chain.from_iterable(
            lane.scripts for lane in lanes))
        self._members = members.union(unique)

    def extended(self, scripts: Iterable[bytes]) -> ScriptSet:
        """This set plus ``scripts``: only the new ones (and small lanes they merge with)
        are packed again."""
        return ScriptSet(scripts, _base=self)

    def updated(self, scripts: AbstractSet[bytes]) -> ScriptSet:
        """A set of exactly ``scripts``: this one extended if it holds none beyond them."""
        if self._members <= scripts:
            return self.extended(scripts - self._members)
        return ScriptSet(scripts)

    def __len__(self) -> int:
        return len(self.scripts)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.scripts)

    def __contains__(self, script: object) -> bool:
        return script in self._members

    def __repr__(self) -> str:
        return f"ScriptSet({len(self.scripts)} scripts)"

    def hashes(self, key: bytes) -> list[int]:
        """SipHash-2-4 of every script under ``key`` (16 bytes), in :attr:`scripts` order."""
        if len(key) != 16:
            raise ValueError(f"SipHash key must be 16 bytes, not {len(key)}")
        k0, k1 = struct.unpack("<QQ", key)
        out: list[int] = []
        for lanes in self._lanes:
            out += lanes.hashes(k0, k1)
        return out


# --- the filter ------------------------------------------------------------------------------
class _QuotientBits(dict[str, str]):
    """Unary quotient ("1" * q) -> q as a fixed-width binary string; grows on demand."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width
        for q in range(64):
            self["1" * q] = format(q, f"0{width}b")

    def __missing__(self, ones: str) -> str:
        if len(ones) >> self.width:
            raise _QuotientTooWide
        return format(len(ones), f"0{self.width}b")  # rare: not cached, bounded memory


class _QuotientTooWide(Exception):
    pass


# A quotient and its remainder become one 32-bit big-endian field, the delta itself; a
# quotient of 2**13 or more (a gap of 2**32, never seen in a real filter) takes the 64-bit path.
_FIELDS = ((_QuotientBits(32 - FILTER_P), "I", 4), (_QuotientBits(64 - FILTER_P), "Q", 8))


def _decode(payload: bytes, n: int) -> list[int]:
    """The ``n`` sorted values of a Golomb-Rice coded stream (MSB-first, zero padded)."""
    nbits = 8 * len(payload)
    if nbits < (FILTER_P + 1) * n:
        raise FilterDecodeError(f"filter data too short for {n} elements")
    bits = format(int.from_bytes(payload, "big"), f"0{nbits}b")
    parts = _SPLIT_MANY.split(bits, n // _SPLIT_RUN)
    if n % _SPLIT_RUN:
        parts += _SPLIT_ONE.split(parts.pop(), n % _SPLIT_RUN)
    if len(parts) != 2 * n + 1:
        raise FilterDecodeError(f"filter data ends before its {n} elements do")
    if len(parts.pop()) >= 8:  # Core: only padding may follow the n-th code
        raise FilterDecodeError("filter data has excess bytes after its last element")
    for table, fmt, size in _FIELDS:
        try:
            fields = list(map(table.__getitem__, parts[0::2]))
        except _QuotientTooWide:
            continue
        parts[0::2] = fields  # each (quotient, remainder) pair now spells its delta in binary
        deltas = struct.unpack(f">{n}{fmt}", int("".join(parts), 2).to_bytes(size * n, "big"))
        return list(accumulate(deltas))
    raise FilterDecodeError("filter element gap is impossibly large")


def _read_compact_size(data: bytes) -> tuple[int, int]:
    """(value, bytes used) of the CompactSize at the start of ``data``, canonical as Core wants."""
    if not data:
        raise FilterDecodeError("empty filter data (no element count)")
    first = data[0]
    if first < 0xFD:
        return first, 1
    size = {0xFD: 2, 0xFE: 4, 0xFF: 8}[first]
    if len(data) < 1 + size:
        raise FilterDecodeError("filter element count is truncated")
    value = int.from_bytes(data[1:1 + size], "little")
    if value < {2: 0xFD, 4: 0x10000, 8: 0x100000000}[size]:
        raise FilterDecodeError("filter element count is not canonically encoded")
    return value, 1 + size


def filter_size(filter_hex: str) -> int:
    """The element count N of a filter in ``getblockfilter``'s hex, without decoding it
    (a block's size in distinct scripts: what matching it is weighed against)."""
    try:
        return _read_compact_size(bytes.fromhex(filter_hex[:18]))[0]
    except (ValueError, TypeError, IndexError) as exc:
        raise FilterDecodeError(f"filter has no element count: {exc}") from None


class GCSFilter:
    """One block's BIP158 basic filter, decoded (and validated) on construction."""

    __slots__ = ("block_hash", "data", "n", "key", "modulus", "_values", "_value_set")

    def __init__(self, block_hash: bytes, data: bytes) -> None:
        """``block_hash`` in internal byte order (the reverse of the RPC hex)."""
        if len(block_hash) != 32:
            raise ValueError(f"block hash must be 32 bytes, not {len(block_hash)}")
        self.block_hash = bytes(block_hash)
        self.data = bytes(data)
        n, used = _read_compact_size(self.data)
        if n > MAX_FILTER_ELEMENTS:
            raise FilterDecodeError(f"filter claims {n} elements, more than {MAX_FILTER_ELEMENTS}")
        self.n = n
        self.key = self.block_hash[:16]  # BIP158: k = first 16 bytes of the hash, wire order
        self.modulus = n * FILTER_M  # F = N * M: items are hashed into [0, F)
        if n == 0:
            if len(self.data) != used:
                raise FilterDecodeError("empty filter has excess bytes")
            self._values: list[int] = []
        else:
            self._values = _decode(self.data[used:], n)
        self._value_set: frozenset[int] | None = None

    @classmethod
    def from_bytes(cls, block_hash_internal_order: bytes, data: bytes) -> GCSFilter:
        return cls(block_hash_internal_order, data)

    @classmethod
    def from_hex(cls, block_hash_internal_order: bytes, filter_hex: str) -> GCSFilter:
        """From ``getblockfilter``'s ``filter`` field (hash: ``hex_str_to_hash(hex)``)."""
        try:
            data = bytes.fromhex(filter_hex)
        except (ValueError, TypeError) as exc:
            raise FilterDecodeError(f"filter is not hex: {exc}") from None
        return cls(block_hash_internal_order, data)

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"GCSFilter(block={hash_to_hex_str(self.block_hash)}, n={self.n})"

    def hash_to_range(self, item: bytes) -> int:
        """The value ``item`` has (or would have) in this filter: SipHash, then fast range."""
        return (siphash24(self.key, item) * self.modulus) >> 64

    def filter_elements(self) -> list[int]:
        """The decoded values, ascending (equal values possible: two items may collide)."""
        return list(self._values)

    def _query_values(
        self, scripts: Iterable[bytes] | ScriptSet
    ) -> tuple[ScriptSet, Iterator[int]]:
        query = scripts if isinstance(scripts, ScriptSet) else ScriptSet(scripts)
        # Fast range: (h * F) >> 64 maps a 64-bit hash onto [0, F) without a division.
        values = map(rshift, map(mul, query.hashes(self.key), repeat(self.modulus)), repeat(64))
        return query, values

    def _values_frozen(self) -> frozenset[int]:
        if self._value_set is None:
            self._value_set = frozenset(self._values)
        return self._value_set

    def match_any(self, scripts: Iterable[bytes] | ScriptSet) -> bool:
        """May the block contain any of ``scripts``? (No false negatives.)"""
        if self.n == 0:
            return False
        # A hash probe per query value is the merge-join's job done by C loops: one pass,
        # O(N + Q), stopping at the first hit.
        return not self._values_frozen().isdisjoint(self._query_values(scripts)[1])

    def match_set(self, scripts: Iterable[bytes] | ScriptSet) -> set[bytes]:
        """The subset of ``scripts`` the block may contain."""
        if self.n == 0:
            return set()
        query, values = self._query_values(scripts)
        return set(compress(query.scripts, map(self._values_frozen().__contains__, values)))

"""Wire-format primitives: compact-size varints, a zero-copy reader, hashing, hex.

Byte-order convention for the whole ``chain`` package: a name with no suffix (or
``_rev``) holds bytes in internal/wire order, exactly as hashed and serialised; a
``_hex`` name holds the display hex bitcoind and Electrum show, which is that byte
string reversed. ``hash_to_hex_str`` and ``hex_str_to_hash`` convert between the two.
"""

from __future__ import annotations

import hashlib
import struct

__all__ = [
    "BytesLike",
    "ByteReader",
    "ChainParseError",
    "double_sha256",
    "hash_to_hex_str",
    "hex_str_to_hash",
    "read_varint",
    "sha256",
    "varint_size",
    "write_varbytes",
    "write_varint",
]

#: Anything the parsers accept; all of them are read through a ``memoryview``.
BytesLike = bytes | bytearray | memoryview

_U16 = struct.Struct("<H").unpack_from
_U32 = struct.Struct("<I").unpack_from
_I32 = struct.Struct("<i").unpack_from
_U64 = struct.Struct("<Q").unpack_from
_I64 = struct.Struct("<q").unpack_from
_MAX_U64 = (1 << 64) - 1


class ChainParseError(ValueError):
    """Truncated, trailing or malformed chain data (never an IndexError or struct.error)."""


def sha256(data: BytesLike) -> bytes:
    """Single SHA-256 digest."""
    return hashlib.sha256(data).digest()


def double_sha256(data: BytesLike) -> bytes:
    """SHA-256 applied twice: txids, block hashes and merkle nodes, in internal order."""
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def hash_to_hex_str(hash_rev: BytesLike) -> str:
    """Internal-order hash bytes -> display hex (reversed), as bitcoind prints it."""
    return bytes(hash_rev)[::-1].hex()


def hex_str_to_hash(hex_str: str) -> bytes:
    """Display hex -> internal-order bytes; the inverse of :func:`hash_to_hex_str`."""
    try:
        return bytes.fromhex(hex_str)[::-1]
    except ValueError as exc:
        raise ChainParseError(f"not a hex string: {hex_str[:80]!r}") from exc


def varint_size(value: int) -> int:
    """Length in bytes of ``value`` as a compact size."""
    if value < 0xFD:
        return 1
    if value <= 0xFFFF:
        return 3
    if value <= 0xFFFFFFFF:
        return 5
    return 9


def write_varint(value: int) -> bytes:
    """Encode ``value`` (0 .. 2**64-1) as a canonical compact size."""
    if value < 0 or value > _MAX_U64:
        raise ValueError(f"compact size out of range: {value}")
    if value < 0xFD:
        return bytes((value,))
    if value <= 0xFFFF:
        return b"\xfd" + value.to_bytes(2, "little")
    if value <= 0xFFFFFFFF:
        return b"\xfe" + value.to_bytes(4, "little")
    return b"\xff" + value.to_bytes(8, "little")


def write_varbytes(data: BytesLike) -> bytes:
    """Length-prefixed bytes (compact size length, then the data)."""
    return write_varint(len(data)) + bytes(data)


def _as_view(data: BytesLike) -> memoryview:
    view = memoryview(data)
    # Reads index single bytes, so anything that is not a flat byte view gets recast.
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def _read_varint_at(view: memoryview, pos: int) -> tuple[int, int]:
    """(value, offset after it) for the compact size at ``pos``; rejects non-canonical forms.

    bitcoind refuses non-canonical sizes, and accepting them would make ``raw`` differ
    from a re-serialisation, so they are refused here too.
    """
    try:
        first = view[pos]
        if first < 0xFD:
            return first, pos + 1
        if first == 0xFD:
            value = _U16(view, pos + 1)[0]
            if value >= 0xFD:
                return value, pos + 3
        elif first == 0xFE:
            value = _U32(view, pos + 1)[0]
            if value > 0xFFFF:
                return value, pos + 5
        else:
            value = _U64(view, pos + 1)[0]
            if value > 0xFFFFFFFF:
                return value, pos + 9
    except (IndexError, struct.error):
        raise ChainParseError(f"truncated compact size at offset {pos}") from None
    raise ChainParseError(f"non-canonical compact size at offset {pos}")


def read_varint(data: BytesLike, offset: int = 0) -> tuple[int, int]:
    """Decode the compact size at ``offset``: returns (value, offset just past it)."""
    if offset < 0:
        raise ChainParseError(f"negative offset {offset}")
    return _read_varint_at(_as_view(data), offset)


class ByteReader:
    """Sequential little-endian reader over a byte buffer, without copying it.

    Every read checks bounds and raises :class:`ChainParseError` on truncation. The
    reader holds a ``memoryview``: a ``bytearray`` source cannot be resized meanwhile.
    """

    __slots__ = ("_pos", "_view")

    def __init__(self, data: BytesLike, offset: int = 0) -> None:
        self._view = _as_view(data)
        if not 0 <= offset <= len(self._view):
            raise ChainParseError(f"offset {offset} outside a {len(self._view)}-byte buffer")
        self._pos = offset

    @property
    def view(self) -> memoryview:
        """The whole underlying buffer (for parsers that work on offsets directly)."""
        return self._view

    @property
    def offset(self) -> int:
        """Current read position from the start of the buffer."""
        return self._pos

    @property
    def remaining(self) -> int:
        """Bytes left to read."""
        return len(self._view) - self._pos

    def at_end(self) -> bool:
        """True when every byte has been consumed."""
        return self._pos >= len(self._view)

    def expect_end(self) -> None:
        """Raise if bytes are left over (a message must fill its buffer exactly)."""
        if self._pos != len(self._view):
            raise ChainParseError(
                f"{len(self._view) - self._pos} trailing bytes at offset {self._pos}"
            )

    def seek(self, offset: int) -> None:
        """Move to an absolute position within the buffer."""
        if not 0 <= offset <= len(self._view):
            raise ChainParseError(f"offset {offset} outside a {len(self._view)}-byte buffer")
        self._pos = offset

    def _take(self, size: int) -> int:
        start = self._pos
        end = start + size
        if size < 0 or end > len(self._view):
            raise ChainParseError(
                f"truncated: need {size} bytes at offset {start}, have {len(self._view) - start}"
            )
        self._pos = end
        return start

    def skip(self, size: int) -> None:
        """Advance ``size`` bytes."""
        self._take(size)

    def read_view(self, size: int) -> memoryview:
        """The next ``size`` bytes as a zero-copy view into the buffer."""
        start = self._take(size)
        return self._view[start : start + size]

    def read_bytes(self, size: int) -> bytes:
        """The next ``size`` bytes as an owned ``bytes`` copy."""
        start = self._take(size)
        return self._view[start : start + size].tobytes()

    def read_u8(self) -> int:
        start = self._take(1)
        return self._view[start]

    def read_u16(self) -> int:
        return int(_U16(self._view, self._take(2))[0])

    def read_u32(self) -> int:
        return int(_U32(self._view, self._take(4))[0])

    def read_i32(self) -> int:
        return int(_I32(self._view, self._take(4))[0])

    def read_u64(self) -> int:
        return int(_U64(self._view, self._take(8))[0])

    def read_i64(self) -> int:
        return int(_I64(self._view, self._take(8))[0])

    def read_varint(self) -> int:
        """A canonical compact size."""
        value, self._pos = _read_varint_at(self._view, self._pos)
        return value

    def read_varbytes(self) -> bytes:
        """Compact-size length then that many bytes, copied."""
        return self.read_bytes(self.read_varint())

    def read_varbytes_view(self) -> memoryview:
        """Compact-size length then that many bytes, as a zero-copy view."""
        return self.read_view(self.read_varint())
